#!/usr/bin/env python3
"""Send one XKS API request signed by botocore and print the HTTP status and response body.

The end-to-end tests use this as a SigV4 client that shares no code with Keyhold or curl.
botocore's SigV4Auth signs the request for the service "kms-xks-proxy". The request goes over
TLS to --connect-address (127.0.0.1 by default), and the server certificate is checked against
--ca-file and the host name in --url.

Output: the HTTP status on the first line, then the response body exactly as received.
Exit status 0 whenever an HTTP response arrived, whatever its status.
"""

import argparse
import http.client
import socket
import ssl
import sys
import urllib.parse

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE = "kms-xks-proxy"
TIMEOUT_SECONDS = 10


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS connection to a fixed IP address that checks the certificate for the URL's host."""

    def __init__(self, host, port, address, context):
        super().__init__(host, port, timeout=TIMEOUT_SECONDS, context=context)
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="https://HOST:PORT/PATH of the XKS API")
    parser.add_argument("--access-key-id", required=True)
    parser.add_argument("--secret-access-key", required=True)
    parser.add_argument("--region", required=True, help="SigV4 region, such as us-east-1")
    parser.add_argument("--body-file", required=True, help="file containing the JSON request body")
    parser.add_argument("--ca-file", required=True, help="PEM CA that signed the server certificate")
    parser.add_argument(
        "--connect-address",
        default="127.0.0.1",
        help="IP address to connect to in place of resolving the URL's host",
    )
    return parser.parse_args()


def main():
    arguments = parse_arguments()
    with open(arguments.body_file, "rb") as file:
        body = file.read()
    url = urllib.parse.urlsplit(arguments.url)

    request = AWSRequest(
        method="POST",
        url=arguments.url,
        data=body,
        headers={"Content-Type": "application/json"},
    )
    credentials = Credentials(arguments.access_key_id, arguments.secret_access_key)
    SigV4Auth(credentials, SERVICE, arguments.region).add_auth(request)

    # botocore signed the host from the URL, so the Host header must carry the same value.
    headers = dict(request.headers.items())
    headers["Host"] = url.netloc

    context = ssl.create_default_context(cafile=arguments.ca_file)
    connection = PinnedHTTPSConnection(
        url.hostname, url.port or 443, arguments.connect_address, context
    )
    try:
        connection.request("POST", url.path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()

    sys.stdout.write(f"{response.status}\n")
    sys.stdout.flush()
    sys.stdout.buffer.write(payload)
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
