#!/usr/bin/env python3
"""Check the AWS-side files that Keyhold generates with the tools that read them.

Usage: check_templates.py DIR
       check_templates.py --check-requirements

Every checked file FILE in DIR has a sidecar FILE.expected.json with the values it must contain:

* *.cfn.yaml, *.cfn.yml, *.cfn.json: CloudFormation templates. cfn-lint must report no error and
  no warning for the Regions in "regions". The template must contain the network load balancer,
  target group, listener, VPC endpoint service and permissions that VPC endpoint service
  connectivity needs, "allowed_principals" as the allowed principals and "parameter_defaults"
  as parameter defaults.
* *.tf: Terraform. python-hcl2 must parse it into exactly one resource block of type
  "resource_type" named "resource_name" whose attributes are exactly "attributes". String
  literals are decoded by HCL's rules, and a live "${" or "%{" template sequence fails.
* *.sh: one AWS CLI command line. shlex.split must give "command" followed by option and value
  pairs, with every option in "parameters" present once with that value and no other option.
  Members of --cli-input-json count as the options they stand for (Description stands for
  --description). bash must split the line into the same words, so nothing in it expands.

The exit status is 0 when every file passed, 1 when any check failed or no file was found, and 2
for a usage error or missing Python packages. The output names each file and what was checked in
it. --check-requirements only checks that the Python packages below are installed and new enough.

Run it only on files from the tests: the bash check sources each *.sh file with `aws` defined as
a function, so a command line that escaped its quoting would run.
"""

import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

# Minimum versions: cfn-lint 1.56 is the first whose schema has the PrivateDnsName property of
# AWS::EC2::VPCEndpointService, and python-hcl2 8 returns string literals as written.
REQUIREMENTS = {"cfn-lint": (1, 56), "python-hcl2": (8,)}
INSTALL_HINT = "python3 -m pip install 'cfn-lint>=1.56' 'python-hcl2>=8'"

try:
    from cfnlint.api import ManualArgs, lint_file
    from cfnlint.decode import decode
    import hcl2
except ImportError as error:
    print(f"error: {error}. Install the packages with {INSTALL_HINT}", file=sys.stderr)
    sys.exit(2)

CLOUDFORMATION_SUFFIXES = (".cfn.yaml", ".cfn.yml", ".cfn.json")

# Resource types and properties that VPC endpoint service connectivity for AWS KMS needs, per the
# AWS KMS Developer Guide, "Configure VPC endpoint service connectivity".
REQUIRED_RESOURCES = {
    "AWS::ElasticLoadBalancingV2::LoadBalancer": {"Type": "network", "Scheme": "internal"},
    "AWS::ElasticLoadBalancingV2::TargetGroup": {"TargetType": "ip", "Protocol": "TCP"},
    "AWS::ElasticLoadBalancingV2::Listener": {"Protocol": "TCP", "Port": 443},
    "AWS::EC2::VPCEndpointService": {"AcceptanceRequired": False},
    "AWS::EC2::VPCEndpointServicePermissions": {},
}

REQUIRED_OUTPUTS = (
    "EndpointServiceName",
    "DnsVerificationRecordName",
    "DnsVerificationRecordType",
    "DnsVerificationRecordValue",
)


class CheckFailed(Exception):
    """Raised when a file does not meet its expectations. The message describes the difference."""


def main(argv):
    if len(argv) != 2 or (argv[1].startswith("-") and argv[1] != "--check-requirements"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    outdated = outdated_requirements()
    if outdated:
        print(f"error: {', '.join(outdated)}. Upgrade with {INSTALL_HINT}", file=sys.stderr)
        return 2
    if argv[1] == "--check-requirements":
        return 0

    directory = Path(argv[1])
    if not directory.is_dir():
        print(f"error: {directory} is not a directory", file=sys.stderr)
        return 2

    checked = 0
    failed = 0
    for path in sorted(directory.iterdir()):
        check = checker_for(path)
        if check is None:
            continue
        checked += 1
        try:
            expected = load_expectations(path)
            summary = check(path, expected)
        except CheckFailed as error:
            failed += 1
            print(f"FAIL {path.name}: {error}")
        else:
            print(f"ok   {path.name}: {summary}")

    if checked == 0:
        print(f"FAIL no *.cfn.yaml, *.cfn.json, *.tf or *.sh file in {directory}")
        return 1
    print(f"{checked - failed} passed, {failed} failed")
    return 1 if failed else 0


def outdated_requirements():
    outdated = []
    for package, minimum in REQUIREMENTS.items():
        version = importlib.metadata.version(package)
        numbers = tuple(int(part) for part in re.findall(r"\d+", version)[: len(minimum)])
        if numbers < minimum:
            required = ".".join(str(part) for part in minimum)
            outdated.append(f"{package} {version} is older than {required}")
    return outdated


def checker_for(path):
    name = path.name
    if name.endswith(CLOUDFORMATION_SUFFIXES):
        return check_cloudformation
    if name.endswith(".tf"):
        return check_terraform
    if name.endswith(".sh"):
        return check_shell
    return None


def load_expectations(path):
    sidecar = path.with_name(path.name + ".expected.json")
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckFailed(f"missing {sidecar.name} with the expected values") from None
    except json.JSONDecodeError as error:
        raise CheckFailed(f"invalid JSON in {sidecar.name}: {error}") from None


# ------------------------------------------------------------------------------------------------
# CloudFormation
# ------------------------------------------------------------------------------------------------


def check_cloudformation(path, expected):
    regions = expected["regions"]
    matches = lint_file(path, config=ManualArgs(regions=regions))
    problems = [m for m in matches if m.rule.id[0] in "EW"]
    if problems:
        listed = "\n".join(
            f"  {m.rule.id} line {m.linenumber}: {m.message}" for m in problems
        )
        raise CheckFailed(f"cfn-lint reported {len(problems)} problems:\n{listed}")

    template, decode_matches = decode(str(path))
    if decode_matches:
        raise CheckFailed(f"template does not parse: {decode_matches[0].message}")

    resources = template.get("Resources", {})
    for resource_type, properties in REQUIRED_RESOURCES.items():
        found = [r for r in resources.values() if r.get("Type") == resource_type]
        if len(found) != 1:
            raise CheckFailed(f"expected one {resource_type} resource, found {len(found)}")
        actual = found[0].get("Properties", {})
        for key, value in properties.items():
            if actual.get(key) != value:
                raise CheckFailed(
                    f"{resource_type} {key} is {actual.get(key)!r}, expected {value!r}"
                )

    service = find_resource(resources, "AWS::EC2::VPCEndpointService")
    if "PrivateDnsName" not in service.get("Properties", {}):
        raise CheckFailed("AWS::EC2::VPCEndpointService sets no PrivateDnsName")

    permissions = find_resource(resources, "AWS::EC2::VPCEndpointServicePermissions")
    principals = permissions["Properties"].get("AllowedPrincipals")
    if principals != expected["allowed_principals"]:
        raise CheckFailed(
            f"AllowedPrincipals is {principals!r}, expected {expected['allowed_principals']!r}"
        )

    parameters = template.get("Parameters", {})
    for name, default in expected["parameter_defaults"].items():
        actual = parameters.get(name, {}).get("Default")
        if actual is None or str(actual) != str(default):
            raise CheckFailed(f"parameter {name} defaults to {actual!r}, expected {default!r}")

    outputs = template.get("Outputs", {})
    missing = [name for name in REQUIRED_OUTPUTS if name not in outputs]
    if missing:
        raise CheckFailed(f"missing outputs: {', '.join(missing)}")

    return (
        f"cfn-lint clean for {', '.join(regions)}; {len(REQUIRED_RESOURCES)} resources, "
        f"principals {principals}, {len(expected['parameter_defaults'])} parameter defaults, "
        f"{len(REQUIRED_OUTPUTS)} outputs"
    )


def find_resource(resources, resource_type):
    return next(r for r in resources.values() if r.get("Type") == resource_type)


# ------------------------------------------------------------------------------------------------
# Terraform
# ------------------------------------------------------------------------------------------------


def check_terraform(path, expected):
    text = path.read_text(encoding="utf-8")
    try:
        document = hcl2.loads(text)
    except Exception as error:  # python-hcl2 raises lark errors of several types.
        raise CheckFailed(f"python-hcl2 cannot parse the file: {error}") from None

    unexpected_blocks = sorted(
        key for key in document if key not in ("resource", "__comments__")
    )
    if unexpected_blocks:
        raise CheckFailed(f"unexpected top-level blocks: {', '.join(unexpected_blocks)}")
    blocks = [
        (resource_type, name, body)
        for block in document.get("resource", [])
        for resource_type, named in block.items()
        for name, body in named.items()
    ]
    if len(blocks) != 1:
        raise CheckFailed(f"expected one resource block, found {len(blocks)}")
    resource_type, name, body = blocks[0]

    resource_type = decode_hcl_label(resource_type)
    name = decode_hcl_label(name)
    if resource_type != expected["resource_type"]:
        raise CheckFailed(
            f"resource type is {resource_type!r}, expected {expected['resource_type']!r}"
        )
    if name != expected["resource_name"]:
        raise CheckFailed(f"resource name is {name!r}, expected {expected['resource_name']!r}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
        raise CheckFailed(f"resource name {name!r} is not a Terraform identifier")

    attributes = {
        key: decode_hcl_string(key, value)
        for key, value in body.items()
        if not key.startswith("__")
    }
    if attributes != expected["attributes"]:
        raise CheckFailed(
            f"attributes differ from the expected ones:\n  actual:   {attributes!r}\n"
            f"  expected: {expected['attributes']!r}"
        )
    return f"{resource_type}.{name} with {len(attributes)} attributes: {', '.join(attributes)}"


def decode_hcl_label(label):
    if len(label) >= 2 and label[0] == '"' and label[-1] == '"':
        return label[1:-1]
    return label


HCL_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def decode_hcl_string(attribute, literal):
    """Decode an HCL quoted template that must contain no interpolation or directive.

    python-hcl2 8 returns string attributes as written, quotes and escapes included.
    """
    if not isinstance(literal, str) or len(literal) < 2 or literal[0] != '"' or literal[-1] != '"':
        raise CheckFailed(
            f"{attribute} is {literal!r}, not a quoted string as python-hcl2 8 returns it"
        )
    body = literal[1:-1]
    decoded = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            code = body[index + 1 : index + 2]
            if code in HCL_ESCAPES:
                decoded.append(HCL_ESCAPES[code])
                index += 2
            elif code in ("u", "U"):
                width = 4 if code == "u" else 8
                digits = body[index + 2 : index + 2 + width]
                if not re.fullmatch(f"[0-9A-Fa-f]{{{width}}}", digits):
                    raise CheckFailed(f"{attribute} has a bad \\{code} escape at {index}")
                decoded.append(chr(int(digits, 16)))
                index += 2 + width
            else:
                raise CheckFailed(f"{attribute} has an unknown escape \\{code} at {index}")
        elif body.startswith(("$${", "%%{"), index):
            decoded.append(char + "{")
            index += 3
        elif body.startswith(("${", "%{"), index):
            sequence = body[index : index + 2]
            raise CheckFailed(f"{attribute} has a live template sequence {sequence} at {index}")
        else:
            decoded.append(char)
            index += 1
    return "".join(decoded)


# ------------------------------------------------------------------------------------------------
# Shell
# ------------------------------------------------------------------------------------------------


def check_shell(path, expected):
    text = path.read_text(encoding="utf-8")
    try:
        words = shlex.split(text, comments=True)
    except ValueError as error:
        raise CheckFailed(f"shlex cannot split the command: {error}") from None

    command = expected["command"]
    if words[: len(command)] != command:
        raise CheckFailed(f"command starts {words[:len(command)]!r}, expected {command!r}")

    arguments = {}
    rest = words[len(command) :]
    if len(rest) % 2:
        raise CheckFailed(f"options and values do not pair up: {rest!r}")
    for option, value in zip(rest[::2], rest[1::2]):
        if not option.startswith("--"):
            raise CheckFailed(f"expected an option, found {option!r}")
        if option == "--cli-input-json":
            for member, member_value in parse_input_json(value).items():
                add_argument(arguments, option_name(member), member_value)
        else:
            add_argument(arguments, option, value)

    for option, value in list(arguments.items()):
        if isinstance(expected["parameters"].get(option), dict):
            arguments[option] = parse_structure(option, value)
    if arguments != expected["parameters"]:
        missing = sorted(set(expected["parameters"]) - set(arguments))
        extra = sorted(set(arguments) - set(expected["parameters"]))
        wrong = sorted(
            option
            for option in set(arguments) & set(expected["parameters"])
            if arguments[option] != expected["parameters"][option]
        )
        details = [f"missing {missing}"] if missing else []
        details += [f"unexpected {extra}"] if extra else []
        details += [
            f"{option} is {arguments[option]!r}, expected {expected['parameters'][option]!r}"
            for option in wrong
        ]
        raise CheckFailed(", ".join(details))

    bash_words = split_with_bash(path)
    if bash_words != words:
        raise CheckFailed(
            f"bash splits the line differently from shlex:\n  bash:  {bash_words!r}\n"
            f"  shlex: {words!r}"
        )
    return f"{' '.join(command)} with {', '.join(sorted(arguments))}; bash and shlex agree"


def add_argument(arguments, option, value):
    if option in arguments:
        raise CheckFailed(f"{option} is given more than once")
    arguments[option] = value


def parse_input_json(value):
    try:
        members = json.loads(value)
    except json.JSONDecodeError as error:
        raise CheckFailed(f"--cli-input-json is not JSON: {error}") from None
    if not isinstance(members, dict):
        raise CheckFailed("--cli-input-json is not a JSON object")
    return members


def option_name(member):
    """Return the AWS CLI option for an API member: CustomKeyStoreId -> --custom-key-store-id."""
    words = re.findall(r"[A-Z][a-z0-9]*", member)
    if "".join(words) != member:
        raise CheckFailed(f"--cli-input-json member {member!r} is not an API member name")
    return "--" + "-".join(word.lower() for word in words)


def parse_structure(option, value):
    """Parse a structure value in JSON or in the shorthand syntax Key=value,Key=value."""
    if value.startswith("{"):
        return parse_input_json(value)
    structure = {}
    for pair in value.split(","):
        key, separator, member_value = pair.partition("=")
        if not separator:
            raise CheckFailed(f"{option} shorthand {pair!r} has no '='")
        structure[key] = member_value
    return structure


def split_with_bash(path):
    """Run the file in bash with `aws` as a function that prints its arguments, NUL-separated."""
    script = 'aws() { printf "%s\\0" aws "$@"; }; . "$1"'
    result = subprocess.run(
        ["bash", "-c", script, "bash", str(path)],
        capture_output=True,
        timeout=10,
        check=False,
    )
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")
        raise CheckFailed(f"bash failed with status {result.returncode}: {stderr}")
    return result.stdout.decode("utf-8").split("\0")[:-1]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
