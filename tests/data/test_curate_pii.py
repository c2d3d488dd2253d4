"""PII scrubbing: generated e-mails, phones and IPv4 addresses go; ISBNs and versions stay."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer.data.curate import CurateConfig, Document, PIIConfig, Pipeline, scrub_pii

EMAIL, PHONE, IP = "|||EMAIL_ADDRESS|||", "|||PHONE_NUMBER|||", "|||IP_ADDRESS|||"

alnum = st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789")
label = st.text(alnum, min_size=1, max_size=10)
emails = st.builds(
    lambda first, rest, domain, tld: f"{first}{rest}@{'.'.join(domain)}.{tld}",
    alnum, st.text(st.sampled_from("abcxyz0189._+-"), max_size=12),
    st.lists(label, min_size=1, max_size=3), st.text(st.sampled_from("comnetorgukde"), min_size=2, max_size=6))


def digits(n):
    return st.text(st.sampled_from("0123456789"), min_size=n, max_size=n)


phones = st.one_of(
    st.builds(lambda a, b, c: f"({a}) {b}-{c}", digits(3), digits(3), digits(4)),
    st.builds(lambda a, b, c, s: f"{a}{s}{b}{s}{c}", digits(3), digits(3), digits(4), st.sampled_from(" -")),
    st.builds(lambda a, b, c: f"+1 {a} {b} {c}", digits(3), digits(3), digits(4)),
    st.builds(lambda a, b, c: f"1-{a}-{b}-{c}", digits(3), digits(3), digits(4)),
    st.builds(lambda cc, a, b, c: f"+{cc} {a} {b} {c}", st.integers(2, 99), digits(2), digits(4), digits(4)),
    st.builds(lambda n: f"+{n}", digits(11)),
)
ipv4s = st.lists(st.integers(0, 255), min_size=4, max_size=4).map(lambda o: ".".join(map(str, o)))


def isbn_13_groups(draw_digits, cuts):
    body = "978" + draw_digits
    a, b = sorted(cuts)
    return f"{body[:3]}-{body[3:3 + a]}-{body[3 + a:3 + b]}-{body[3 + b:12]}-{body[12]}"


isbns = st.one_of(
    st.builds(lambda d, cuts: "ISBN " + isbn_13_groups(d, cuts), digits(10),
              st.lists(st.integers(1, 8), min_size=2, max_size=2, unique=True)),
    st.builds(lambda d: "ISBN-13: 978" + d, digits(10)),
    st.builds(lambda d: f"ISBN {d[0]}-{d[1:4]}-{d[4:9]}-{d[9]}", digits(10)),
    st.builds(lambda d: "ISBN " + d, digits(10)),
    st.builds(lambda d: "ISBN-10: " + " ".join([d[:3], d[3:6], d[6:]]), digits(10)),
    st.builds(lambda d: "ISBN-13: 978 " + " ".join([d[:3], d[3:6], d[6:]]), digits(10)),
)
part = st.integers(0, 999).map(str)
versions = st.one_of(
    st.builds(lambda parts: "v" + ".".join(parts), st.lists(part, min_size=1, max_size=4)),
    st.builds(lambda parts: ".".join(parts), st.lists(part, min_size=2, max_size=3)),
)
words = st.lists(st.sampled_from(["see", "the", "notes", "at", "or", "call", "version", "(", ")", ","]),
                 max_size=4).map(" ".join)


def sentence(before, item, after, end):
    return f"{before} {item}{end} {after}".strip()


ends = st.sampled_from(["", ".", ",", ";", ")", "!"])


@settings(max_examples=80, deadline=None)
@given(item=st.one_of(emails.map(lambda e: (e, EMAIL)), phones.map(lambda p: (p, PHONE)),
                      ipv4s.map(lambda i: (i, IP))), before=words, after=words, end=ends)
def test_generated_personal_data_is_replaced(item, before, after, end):
    value, placeholder = item
    scrubbed, hits = scrub_pii(sentence(before, value, after, end))
    assert value not in scrubbed
    assert scrubbed == sentence(before, placeholder, after, end)
    assert sum(hits.values()) == 1


@settings(max_examples=80, deadline=None)
@given(item=st.one_of(isbns, versions), before=words, after=words, end=ends)
def test_isbns_and_version_strings_are_left_alone(item, before, after, end):
    text = sentence(before, item, after, end)
    assert scrub_pii(text) == (text, {})


def test_worked_examples():
    text = ("Mail jo.smith+news@mail.example.co.uk or call (555) 123-4567, +44 20 7946 0958 "
            "from 192.168.0.1. Python 3.11.7 and v1.2.3.4 need ISBN 978-0-306-40615-7 "
            "(ISBN-13: 978 030 640 6157, ISBN 0306406152), not 10.0.0.256 or 1.2.3.4.5.")
    scrubbed, hits = scrub_pii(text)
    assert scrubbed == (f"Mail {EMAIL} or call {PHONE}, {PHONE} from {IP}. Python 3.11.7 and "
                        "v1.2.3.4 need ISBN 978-0-306-40615-7 (ISBN-13: 978 030 640 6157, "
                        "ISBN 0306406152), not 10.0.0.256 or 1.2.3.4.5.")
    assert hits == {"email": 1, "phone": 2, "ipv4": 1}


def test_kinds_can_be_switched_off_and_placeholders_changed():
    cfg = PIIConfig(phones=False, email_placeholder="<email>")
    assert scrub_pii("a@b.org 555-123-4567", cfg) == ("<email> 555-123-4567", {"email": 1})


@pytest.mark.parametrize("n, dropped", [(5, False), (6, True)])
def test_documents_with_more_than_max_hits_are_dropped(n, dropped):
    off = {s: {"enabled": False} for s in ("gopher_repetition", "gopher_quality", "fineweb", "c4",
                                           "minhash")}
    text = "Contacts: " + ", ".join(f"user{i}@example.com" for i in range(n)) + "."
    pipe = Pipeline(CurateConfig.from_dict(off))
    kept = list(pipe.run([Document({"id": 1}, text, "mem", 1)]))
    stage = pipe.report.stage("pii")
    assert stage.counts == {"email": n}
    if dropped:
        assert kept == [] and stage.dropped == {"too_much_pii": 1}
        example = stage.examples["too_much_pii"][0]
        assert "@" not in example["text"]          # the report quotes the scrubbed text
        assert example["detail"] == "6 matches (6 email)"
    else:
        assert kept[0].text == "Contacts: " + ", ".join([EMAIL] * n) + "."
        assert stage.modified == 1
