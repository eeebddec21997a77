"""The callback URL and address rules (fleet/callback_policy.py): what may be posted to, and why not."""

from __future__ import annotations

import pytest

from fleet.callback_policy import CallbackRefused, address_refusal, check_callback_url

REG = "https://lms.example/apa"


@pytest.mark.parametrize("url", ["https://lms.example/apa", "https://lms.example/other/path?x=1",
                                 "https://LMS.example:443/apa", "https://lms.example./apa"])
def test_https_on_the_registered_origin_passes(url: str) -> None:
    assert check_callback_url(url, REG, allow_loopback_http=False) == url


@pytest.mark.parametrize(("url", "why"), [
    ("http://lms.example/apa", "https"),
    ("https://lms.example:8443/apa", "registered callback origin"),
    ("https://evil.example/apa", "registered callback origin"),
    ("https://lms.example.evil.example/apa", "registered callback origin"),
    ("https://user:pw@lms.example/apa", "credentials"),
    ("https://10.0.0.1/apa", "private"),
    ("https://192.168.1.1/apa", "private"),
    ("https://172.16.0.9/apa", "private"),
    ("https://100.64.0.1/apa", "private"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://[fe80::1]/apa", "link-local"),
    ("https://[fd00::1]/apa", "private"),
    ("https://[::ffff:10.0.0.1]/apa", "private"),
    ("https://127.0.0.1/apa", "loopback"),
    ("https://[::1]/apa", "loopback"),
    ("https://0.0.0.0/apa", "unicast"),
    ("https://localhost/apa", "localhost"),
    ("ftp://lms.example/apa", "https"),
    ("https:///apa", "https"),
])
def test_refused_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(CallbackRefused, match=why):
        check_callback_url(url, REG, allow_loopback_http=False)


def test_a_tenant_without_a_registered_url_gets_no_callbacks() -> None:
    with pytest.raises(CallbackRefused, match="no registered callback URL"):
        check_callback_url(REG, None, allow_loopback_http=False)


def test_loopback_http_only_with_the_setting_and_only_loopback() -> None:
    local = "http://127.0.0.1:8123/cb"
    with pytest.raises(CallbackRefused):
        check_callback_url(local, local, allow_loopback_http=False)
    assert check_callback_url(local, local, allow_loopback_http=True) == local
    assert check_callback_url("http://localhost:8123/x", "http://localhost:8123/cb", allow_loopback_http=True)
    for url in ("http://lms.example/apa", "http://10.0.0.1/apa", "https://169.254.169.254/x"):
        with pytest.raises(CallbackRefused):  # the setting admits loopback, nothing else
            check_callback_url(url, url, allow_loopback_http=True)


@pytest.mark.parametrize(("address", "loopback_ok", "refused"), [
    ("93.184.216.34", False, False), ("2606:2800:220:1::1", False, False),
    ("127.0.0.1", False, True), ("127.0.0.1", True, False), ("::1", True, False),
    ("10.2.3.4", True, True), ("169.254.169.254", True, True), ("fe80::1", True, True),
    ("224.0.0.1", False, True), ("::ffff:192.168.0.1", False, True), ("not-an-ip", False, True),
])
def test_address_rule(address: str, loopback_ok: bool, refused: bool) -> None:
    assert (address_refusal(address, allow_loopback=loopback_ok) is not None) is refused
