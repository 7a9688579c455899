"""icefloe's ListObjectsV2 parsing gives botocore's own result, and takes its fast path when it can."""

from __future__ import annotations

import copy
from typing import Any

import botocore.handlers
import botocore.session
import pytest
from botocore.parsers import ResponseParserError, RestXMLParser

from icefloe.s3 import _timestamp
from icefloe.s3_listing import ListingParser, _check_200

S3_MODEL = botocore.session.get_session().get_service_model("s3")
LISTING = S3_MODEL.operation_model("ListObjectsV2")
OUTPUT: Any = LISTING.output_shape
HANDLERS: Any = botocore.handlers  # the stock 200-error check is a botocore internal
NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def page(contents: str, *, ns: str = NS, extra: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult{ns}><Name>bucket</Name><Prefix></Prefix>'
        f"<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
        f"<KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType>"
        f"<IsTruncated>true</IsTruncated><StartAfter>in%2Fa</StartAfter>{contents}{extra}</ListBucketResult>"
    ).encode()


# As AWS lists objects uploaded since 2025 (default CRC64NVME checksums), URL-encoded keys.
AWS_OBJECTS = (
    "<Contents><Key>in/dt%3D2025-01-01/a%09b%20c.jsonl</Key><LastModified>2025-01-02T03:04:05.000Z</LastModified>"
    "<ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag><ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm>"
    "<ChecksumType>FULL_OBJECT</ChecksumType><Size>1234567890123</Size><StorageClass>STANDARD</StorageClass>"
    "</Contents>"
    "<Contents><Key>in/%C3%BC.csv</Key><LastModified>2025-01-02T03:04:06.000Z</LastModified>"
    "<ETag>&quot;d41d8cd98f00b204e9800998ecf8427e-2&quot;</ETag><ChecksumAlgorithm>CRC32</ChecksumAlgorithm>"
    "<ChecksumAlgorithm>SHA256</ChecksumAlgorithm><Size>0</Size><StorageClass>GLACIER</StorageClass></Contents>"
    "<CommonPrefixes><Prefix>in/sub/</Prefix></CommonPrefixes><CommonPrefixes><Prefix>in/x/</Prefix></CommonPrefixes>"
)
OWNER = "<Contents><Key>k</Key><Size>1</Size><Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner></Contents>"


def response(body: bytes, **headers: str) -> dict[str, Any]:
    return {
        "status_code": 200,
        "headers": {"x-amz-request-id": "req-1", "x-amz-id-2": "host-1", **headers},
        "body": body,
    }


def both(body: bytes, **headers: str) -> tuple[Any, Any]:
    stock = RestXMLParser(timestamp_parser=_timestamp).parse(response(body, **headers), OUTPUT)
    fast = ListingParser(timestamp_parser=_timestamp).parse(response(body, **headers), OUTPUT)
    return fast, stock


@pytest.mark.parametrize(
    "body",
    [
        page(AWS_OBJECTS),
        page(AWS_OBJECTS, ns=""),  # S3-compatible stores that leave the namespace out
        page(AWS_OBJECTS, extra="<SomethingNew>1</SomethingNew>"),  # not in the model: ignored by both
        page(""),  # an empty page
        page(OWNER),  # a nested structure (FetchOwner): botocore parses it
    ],
    ids=["aws", "no-namespace", "unknown-element", "empty", "owner"],
)
def test_a_listing_page_parses_as_botocore_parses_it(body: bytes) -> None:
    fast, stock = both(body, **{"x-amz-request-charged": "requester"})
    assert fast == stock
    assert fast["ResponseMetadata"]["RequestId"] == "req-1"


def test_the_fast_path_reads_every_field_without_botocore_walking_the_page() -> None:
    walked: list[str] = []

    class Watched(ListingParser):
        def _parse_shape(self, shape: Any, node: Any) -> Any:
            walked.append(shape.name)
            return super()._parse_shape(shape, node)  # type: ignore[misc]

    parsed = Watched(timestamp_parser=_timestamp).parse(response(page(AWS_OBJECTS)), OUTPUT)
    assert walked == []
    first, second = parsed["Contents"]
    assert first["Key"] == "in/dt%3D2025-01-01/a%09b%20c.jsonl"  # decoded later, by botocore's after-call handler
    assert first["Size"] == 1234567890123 and first["ETag"] == '"9b2cf535f27731c974343645a3985328"'
    assert first["LastModified"].isoformat() == "2025-01-02T03:04:05+00:00"
    assert second["ChecksumAlgorithm"] == ["CRC32", "SHA256"]
    assert parsed["IsTruncated"] is True and parsed["KeyCount"] == 2 and parsed["Prefix"] == ""
    assert parsed["CommonPrefixes"] == [{"Prefix": "in/sub/"}, {"Prefix": "in/x/"}]

    Watched(timestamp_parser=_timestamp).parse(response(page(OWNER)), OUTPUT)
    assert walked, "a page with an Owner goes through botocore's walk"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (page(AWS_OBJECTS)[:-40], ResponseParserError),  # XML that does not parse
        (page(AWS_OBJECTS.replace("<Size>0</Size>", "<Size>0</Size><Size>1</Size>")), TypeError),  # repeated
    ],
    ids=["cut-off", "repeated-scalar"],
)
def test_a_page_botocore_cannot_parse_fails_as_botocore_fails(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as stock:
        RestXMLParser(timestamp_parser=_timestamp).parse(response(body), OUTPUT)
    with pytest.raises(error) as ours:
        ListingParser(timestamp_parser=_timestamp).parse(response(body), OUTPUT)
    assert str(ours.value) == str(stock.value)


def test_other_operations_are_botocores() -> None:
    shape: Any = S3_MODEL.operation_model("ListBuckets").output_shape
    body = (
        f"<ListAllMyBucketsResult{NS}><Buckets><Bucket><Name>b</Name>"
        "<CreationDate>2025-01-01T00:00:00.000Z</CreationDate></Bucket></Buckets>"
        "<Owner><ID>x</ID></Owner></ListAllMyBucketsResult>"
    ).encode()
    stock = RestXMLParser(timestamp_parser=_timestamp).parse(response(body), shape)
    assert ListingParser(timestamp_parser=_timestamp).parse(response(body), shape) == stock
    assert stock["Buckets"][0]["Name"] == "b"


@pytest.mark.parametrize(
    "body",
    [
        page(AWS_OBJECTS),
        page(""),
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code><Message>x</Message></Error>',
        page(AWS_OBJECTS)[:-30],  # cut off
        page(AWS_OBJECTS)[:100],
        b"  " + page(""),  # whitespace before the declaration: not XML
        b"<!-- a comment --><ListBucketResult></ListBucketResult>",
        page("") + b"\n\n",
        b"",
    ],
    ids=[
        "page",
        "empty-page",
        "error",
        "cut-off",
        "cut-early",
        "leading-space",
        "comment",
        "trailing-newlines",
        "no-body",
    ],
)
def test_the_200_error_check_decides_as_botocores(body: bytes) -> None:
    ours = {"status_code": 200, "headers": {}, "body": body}
    stock = copy.deepcopy(ours)
    _check_200(LISTING, ours)
    HANDLERS._handle_200_error(LISTING, stock)
    assert ours["status_code"] == stock["status_code"]
