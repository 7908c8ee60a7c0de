"""Sign request cases with botocore's SigV4Auth, an implementation independent of Keyhold.

Reads a JSON list of cases from the file named by the first argument and prints a JSON list
with, for each case, the headers botocore added (Authorization and X-Amz-Date).
"""

import base64
import json
import sys

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def sign(case):
    request = AWSRequest(
        method="POST",
        url="https://" + case["host"] + case["path"],
        data=base64.b64decode(case["body"]),
        headers=case["headers"],
    )
    credentials = Credentials(case["access_key_id"], case["secret"])
    SigV4Auth(credentials, "kms-xks-proxy", case["region"]).add_auth(request)
    return {
        "authorization": request.headers["Authorization"],
        "amz_date": request.headers["X-Amz-Date"],
    }


def main():
    with open(sys.argv[1], encoding="utf-8") as cases_file:
        cases = json.load(cases_file)
    json.dump([sign(case) for case in cases], sys.stdout)


if __name__ == "__main__":
    main()
