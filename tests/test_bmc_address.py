"""BMC addresses as operators type them: the accepted forms and one-line refusals."""

import pytest

from aiorch.errors import InvalidInput
from aiorch.metal.bmc import BmcAddress, parse_bmc


def test_redfish_http_keeps_base_and_system_path() -> None:
    addr = parse_bmc("redfish+http://127.0.0.1:8000/redfish/v1/Systems/abc")
    assert addr == BmcAddress(
        "redfish", "http://127.0.0.1:8000", "/redfish/v1/Systems/abc", "127.0.0.1", 8000
    )
    assert addr.display() == "redfish+http://127.0.0.1:8000/redfish/v1/Systems/abc"


def test_plain_redfish_means_https_on_443() -> None:
    addr = parse_bmc("redfish://bmc1.example/redfish/v1/Systems/1/")
    assert (addr.url, addr.port, addr.system_path) == (
        "https://bmc1.example:443",
        443,
        "/redfish/v1/Systems/1",
    )
    assert parse_bmc("redfish+https://h:8443/redfish/v1/Systems/S").url == "https://h:8443"


def test_ipmi_defaults_to_port_623() -> None:
    assert parse_bmc("ipmi://10.0.0.5") == BmcAddress("ipmi", "", "", "10.0.0.5", 623)
    assert parse_bmc("ipmi://h:6230").display() == "ipmi://h:6230"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("redfish+http://admin:pw@h/redfish/v1/Systems/1", "credentials"),
        ("http://h/redfish/v1/Systems/1", "unknown scheme"),
        ("redfish+http://h:8000/redfish/v1/", "must name a system"),
        ("ipmi://h/extra", "no path"),
        ("ipmi://", "no host"),
        ("ipmi://h:notaport", "not a URL"),
    ],
)
def test_a_rejected_address_is_a_one_line_error(text: str, words: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_bmc(text)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert "pw" not in str(err.value).replace(words, "")
