"""Where a webhook may point (issue 15, server-side request forgery): only http(s) URLs whose
host resolves to public addresses, unless allow-listed in NOTIFICATION_WEBHOOK_ALLOWED_HOSTS;
checked when a subscription is saved and again at every send, where a refusal is a failed,
audited delivery (not retried, never a crash) and the request goes to the checked address
without following redirects. The receiver is a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import pytest
from django.utils import timezone

from policy import notifications, webhooks
from policy.alerts import escalation_message
from policy.choices import DeliveryStatus
from policy.models import NotificationDelivery, NotificationSubscription
from policy.tests.receiver import Receiver
from telemetry.models import Anomaly
from twins.models import AuditEntry

pytestmark = pytest.mark.django_db
SECRET = "receiver-shared-secret-0123456789"
URL = "/settings/notifications/"


@pytest.fixture
def receiver():
    server = Receiver(secret=SECRET).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_allow_list(settings):
    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = []
    settings.NOTIFY_MAX_RETRIES = 3
    settings.PUBLIC_URL = "https://ops.example"
    return settings


def escalate(pump) -> NotificationDelivery:
    """Notify one critical anomaly (eager Celery: sent, retried and settled inline); the one
    delivery made."""
    now = timezone.now()
    anomaly = Anomaly.objects.create(asset=pump, metric="Pressure", detector="ewma",
                                     kind="spike", severity="critical", score=0.99,
                                     started_at=now, last_seen_at=now)
    notifications.notify(escalation_message(anomaly))
    return NotificationDelivery.objects.get()


def hook(user, url: str) -> NotificationSubscription:
    """A stored webhook subscription, as an older row or an admin's shell would leave it
    (not through the save-time check)."""
    return NotificationSubscription.objects.create(user=user, email=False, webhook_url=url,
                                                   webhook_secret=SECRET)


@pytest.mark.parametrize("address, what", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("10.1.2.3", "private"), ("192.168.0.10", "private"), ("172.16.5.4", "private"),
    ("fc00::1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"),
    ("240.0.0.1", "reserved"), ("100.64.0.1", "not a public"), ("192.0.2.7", "private"),
    ("2002:7f00:1::", "loopback"), ("2002:a00:1::", "private"),  # 6to4 of 127.0.0.1, 10.0.0.1
    ("2001:0:4136:e378:8000:63bf:80ff:fefe", "loopback"),  # Teredo client 127.0.0.1
])
def test_non_public_addresses_are_refused(address, what):
    why = webhooks.address_refusal(ipaddress.ip_address(address), [])
    assert why is not None and what in why


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"])
def test_public_addresses_are_allowed(address):
    assert webhooks.address_refusal(ipaddress.ip_address(address), []) is None


def test_allow_list_patterns_match_names_wildcards_addresses_and_networks():
    patterns = ["hooks.internal", "*.corp.example", "127.0.0.1", "10.20.0.0/16", "::1"]
    assert webhooks.host_allowed("hooks.internal", patterns)
    assert webhooks.host_allowed("HOOKS.internal.", patterns)
    assert webhooks.host_allowed("a.b.corp.example", patterns)
    assert not webhooks.host_allowed("corp.example", patterns)  # the wildcard: subdomains
    assert not webhooks.host_allowed("hooks.internal.evil.example", patterns)
    assert webhooks.host_allowed("127.0.0.1", patterns)
    assert webhooks.host_allowed("[::1]", patterns)
    assert webhooks.host_allowed("10.20.3.4", patterns)
    assert not webhooks.host_allowed("10.21.0.1", patterns)
    assert not webhooks.host_allowed("127.0.0.2", patterns)
    assert webhooks.address_refusal(ipaddress.ip_address("10.20.9.9"), patterns) is None
    assert webhooks.address_refusal(ipaddress.ip_address("10.30.9.9"), patterns) is not None


def test_the_save_time_check_names_the_reason(settings):
    """Internal services (PostgreSQL, Redis, the cloud metadata address, a name resolving to
    loopback) are refused with the reason; an allow-listed host is accepted; a name that does
    not resolve now is accepted (checked again at every send)."""
    assert webhooks.refusal("ftp://hooks.example/x") == \
        "Not allowed: the scheme must be http or https, not 'ftp'"
    assert "must be http or https" in webhooks.refusal("file:///etc/passwd")
    assert "127.0.0.1 is a loopback address" in webhooks.refusal("http://127.0.0.1:5432/")
    assert "169.254.169.254 is a link-local address" in \
        webhooks.refusal("http://169.254.169.254/latest/meta-data/")
    assert webhooks.refusal("http://localhost:6379/") == (
        "Not allowed: localhost resolves to 127.0.0.1, which is a loopback address; add it to "
        "NOTIFICATION_WEBHOOK_ALLOWED_HOSTS to allow it")
    assert "::1 is a loopback" in webhooks.refusal("http://[::1]:8080/")
    assert "NOTIFICATION_WEBHOOK_ALLOWED_HOSTS" in webhooks.refusal("http://10.0.0.8/h")
    assert webhooks.refusal("https://hooks.invalid/opstwin") is None
    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = ["localhost", "10.0.0.0/8"]
    assert webhooks.refusal("http://localhost:6379/") is None
    assert webhooks.refusal("http://10.0.0.8/h") is None
    assert webhooks.refusal("http://127.0.0.1:5432/") is not None  # by name, not address


def test_the_settings_page_refuses_an_internal_webhook_with_a_clear_message(
        users, supervisor_client, settings):
    """GIVEN no allow-list; WHEN a supervisor saves a webhook on the PostgreSQL port of this
    machine; THEN 400 with the reason, nothing stored or audited; with 127.0.0.1 allow-listed
    the same URL is saved."""
    form = {"kinds": ["approval_needed"], "email": "on",
            "webhook_url": "http://127.0.0.1:5432/"}
    refused = supervisor_client.post(URL, form, HTTP_ACCEPT="text/html")
    assert refused.status_code == 400
    assert "127.0.0.1 is a loopback address" in refused.content.decode()
    assert not NotificationSubscription.objects.exists()
    assert not AuditEntry.objects.filter(resource_type="notification_subscription").exists()

    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    assert supervisor_client.post(URL, form).status_code == 303
    assert NotificationSubscription.objects.get().webhook_url == "http://127.0.0.1:5432/"


def test_the_local_receiver_is_refused_at_delivery_without_the_allow_list(
        pump, users, receiver):
    """GIVEN a stored webhook to the local receiver and no allow-list; WHEN an escalation is
    notified; THEN nothing reaches the receiver, the delivery fails at once (1 attempt, no
    retry) with the reason, and the failure is audited."""
    hook(users["supervisor"], receiver.url)

    delivery = escalate(pump)

    assert receiver.requests == []
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 1)
    assert delivery.last_error.startswith("refused: 127.0.0.1 is a loopback address")
    entry = AuditEntry.objects.get(action="alert.delivery_failed")
    assert "failed after 1 attempt: refused: 127.0.0.1 is a loopback" in entry.reason
    assert "NOTIFICATION_WEBHOOK_ALLOWED_HOSTS" in entry.reason


def test_the_local_receiver_is_reached_with_the_allow_list(pump, users, receiver, settings):
    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    hook(users["supervisor"], receiver.url)

    delivery = escalate(pump)

    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 1)
    assert [r.signature_ok for r in receiver.requests] == [True]


def test_an_allow_list_narrowed_after_saving_is_enforced_at_delivery(
        pump, users, supervisor_client, receiver, settings):
    """The save-time check is not the only one: a URL accepted then is refused once its host
    leaves the allow-list."""
    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    saved = supervisor_client.post(URL, {"kinds": ["anomaly_escalated"], "all_twins": "on",
                                         "webhook_url": receiver.url})
    assert saved.status_code == 303
    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = []

    delivery = escalate(pump)

    assert receiver.requests == [] and delivery.status == DeliveryStatus.FAILED
    assert "loopback" in delivery.last_error


def test_a_name_on_the_allow_list_is_sent_to_its_checked_address_with_its_host_header(
        pump, users, receiver, settings):
    """GIVEN ``localhost`` allow-listed by name and a webhook at http://localhost:<port>;
    THEN the request reaches the receiver (connected by the resolved address) and still says
    ``Host: localhost:<port>``; without the allow-list it is refused."""
    port = receiver.server.server_address[1]
    hook(users["supervisor"], f"http://localhost:{port}/hooks/opstwin")
    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = ["localhost"]

    delivery = escalate(pump)

    assert delivery.status == DeliveryStatus.DELIVERED
    [request] = receiver.requests
    assert request.headers["host"] == f"localhost:{port}" and request.signature_ok
    where = webhooks.target(f"http://localhost:{port}/x")
    assert str(where.pinned_url(where.addresses[0])) == f"http://127.0.0.1:{port}/x"
    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = []
    with pytest.raises(webhooks.WebhookRefused):
        webhooks.target(f"http://localhost:{port}/x")


def test_a_redirect_is_not_followed(pump, users, receiver, settings):
    """GIVEN an allowed receiver answering 307 to a second receiver; THEN the second gets
    nothing and the delivery fails saying redirects are not followed."""
    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.NOTIFY_MAX_RETRIES = 0
    elsewhere = Receiver(secret=SECRET).start()
    try:
        receiver.answers, receiver.location = [307], elsewhere.url
        hook(users["supervisor"], receiver.url)

        delivery = escalate(pump)

        assert len(receiver.requests) == 1 and elsewhere.requests == []
    finally:
        elsewhere.stop()
    assert (delivery.status, delivery.response_status) == (DeliveryStatus.FAILED, 307)
    assert "redirects are not followed" in delivery.last_error


def test_an_unresolvable_host_is_retried_not_refused(pump, users, settings):
    """DNS may recover: a host that does not resolve is an ordinary failure, retried."""
    settings.NOTIFY_MAX_RETRIES = 1
    hook(users["supervisor"], "https://hooks.invalid/opstwin")

    delivery = escalate(pump)

    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 2)
    assert delivery.last_error.startswith("cannot resolve hooks.invalid")


def test_the_allow_list_is_read_from_the_environment_comma_separated():
    """A process started with NOTIFICATION_WEBHOOK_ALLOWED_HOSTS (e.g. the browser tests' live
    server) gets the list; unset, it is empty."""
    code = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS)")
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "opstwin_site.settings"}
    env.pop("NOTIFICATION_WEBHOOK_ALLOWED_HOSTS", None)

    def read(**extra) -> str:
        return subprocess.run([sys.executable, "-c", code], env=env | extra, check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()

    assert read(NOTIFICATION_WEBHOOK_ALLOWED_HOSTS="127.0.0.1, *.corp.example,,") == \
        "['127.0.0.1', '*.corp.example']"
    assert read() == "[]"


def self_signed(name: str, folder) -> tuple[str, str]:
    """A certificate for DNS name ``name`` only (no IP address) and its key, as PEM files."""
    from datetime import datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_https_goes_to_the_checked_address_and_is_verified_against_the_host_name(
        pump, users, settings, tmp_path, monkeypatch):
    """GIVEN an HTTPS receiver on 127.0.0.1 whose certificate names ``localhost`` only (trusted
    through SSL_CERT_FILE), and ``localhost`` allow-listed; WHEN a notification is sent to
    https://localhost:<port>; THEN it is delivered although the connection is made to the
    checked IP address (TLS server name and verification use the host name). Addressed as
    https://127.0.0.1:<port>, the same certificate is refused: verification is on."""
    import ssl

    cert, key = self_signed("localhost", tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
    settings.NOTIFY_MAX_RETRIES = 0
    secure = Receiver(secret=SECRET, tls=context).start()
    try:
        port = secure.server.server_address[1]
        subscription = hook(users["supervisor"], f"https://localhost:{port}/hooks/opstwin")

        delivery = escalate(pump)

        assert (delivery.status, delivery.response_status) == (DeliveryStatus.DELIVERED, 200)
        [request] = secure.requests
        assert request.signature_ok and request.headers["host"] == f"localhost:{port}"

        subscription.webhook_url = secure.url  # https://127.0.0.1:<port>/...
        subscription.save()
        NotificationDelivery.objects.all().delete()
        mismatched = escalate(pump)
    finally:
        secure.stop()
    assert mismatched.status == DeliveryStatus.FAILED
    assert "certificate" in mismatched.last_error.lower()


def test_django_admin_refuses_an_internal_webhook_too(users, admin_client):
    form = {"user": users["supervisor"].pk, "kinds": ["approval_needed"], "email": "on",
            "all_twins": "on", "webhook_url": "http://169.254.169.254/latest/meta-data/"}
    refused = admin_client.post("/admin/policy/notificationsubscription/add/", form)
    assert refused.status_code == 200  # the form again, with the reason
    assert "169.254.169.254 is a link-local address" in refused.content.decode()
    assert not NotificationSubscription.objects.exists()
