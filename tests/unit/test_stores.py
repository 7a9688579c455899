"""Source URIs of every store, and the store settings read the ecosystems' own variables."""

from __future__ import annotations

import pytest

from icefloe.errors import ConfigurationError
from icefloe.ingestions import IngestionSpec
from icefloe.redaction import redact_uri
from icefloe.settings import AzureSettings, GcsSettings
from icefloe.stores import Location, directory_of, parse_source


@pytest.mark.parametrize(
    ("uri", "expected", "file_uri"),
    [
        ("s3://b/in/", Location("s3", "b", "in/", "s3://b/"), "s3://b/in/x.csv"),
        ("gs://b/in/", Location("gs", "b", "in/", "gs://b/"), "gs://b/in/x.csv"),
        ("az://c/in/", Location("az", "c", "in/", "az://c/"), "az://c/in/x.csv"),
        (
            "abfss://c@acct.dfs.core.windows.net/in/",
            Location("az", "c", "in/", "abfss://c@acct.dfs.core.windows.net/", account="acct"),
            "abfss://c@acct.dfs.core.windows.net/in/x.csv",
        ),
        ("file:///data/in/", Location("file", "", "data/in/", "file:///"), "file:///data/in/x.csv"),
        ("file:///data/a%20b/", Location("file", "", "data/a b/", "file:///"), "file:///data/a b/x.csv"),
    ],
)
def test_source_uris(uri: str, expected: Location, file_uri: str) -> None:
    location = parse_source(uri)
    assert location == expected
    assert location.uri(location.prefix + "x.csv") == file_uri
    assert location.key_of(file_uri) == location.prefix + "x.csv"


@pytest.mark.parametrize(
    "uri", ["s3://", "gs:///x", "http://b/x", "file://host/x", "abfss://c@acct.example.com/x", "bucket/x", "az://k@c/"]
)
def test_bad_source_uris_name_the_forms(uri: str) -> None:
    with pytest.raises(ConfigurationError, match=r"gs://bucket/prefix/.*file:///path/"):
        parse_source(uri)


def test_directory_of_a_prefix() -> None:
    assert [directory_of(p) for p in ("a/b/", "a/b/c", "abc", "")] == ["a/b/", "a/b/", "", ""]


def test_an_abfss_container_is_not_taken_for_credentials() -> None:
    assert redact_uri("abfss://c@acct.dfs.core.windows.net/in/") == "abfss://c@acct.dfs.core.windows.net/in/"
    assert redact_uri("s3://key:secret@b/in/") == "s3://***@b/in/"


def test_gcs_settings_from_the_google_variables() -> None:
    assert GcsSettings.from_env({}) == GcsSettings()
    settings = GcsSettings.from_env(
        {"GOOGLE_APPLICATION_CREDENTIALS": "/k.json", "STORAGE_EMULATOR_HOST": "127.0.0.1:4443"}
    )
    assert settings == GcsSettings(credentials_file="/k.json", emulator_host="http://127.0.0.1:4443")


def test_azure_settings_from_a_connection_string() -> None:
    conn = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5==;EndpointSuffix=core.windows.net"
    settings = AzureSettings.from_env({"AZURE_STORAGE_CONNECTION_STRING": conn})
    assert (settings.account, settings.account_key) == ("acct", "a2V5==")
    assert settings.blob_endpoint == "https://acct.blob.core.windows.net"
    assert "a2V5" not in repr(settings)
    azurite = AzureSettings.from_env({"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"})
    assert (azurite.account, azurite.blob_endpoint) == ("devstoreaccount1", "http://127.0.0.1:10000/devstoreaccount1")
    keyed = AzureSettings.from_env({"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": "k"})
    assert (keyed.account, keyed.account_key, keyed.blob_endpoint) == ("acct", "k", None)
    with pytest.raises(ConfigurationError, match="Key=Value"):
        AzureSettings.from_env({"AZURE_STORAGE_CONNECTION_STRING": "not a connection string"})


def test_spark_refuses_sources_it_cannot_read_and_azure_lists_fully() -> None:
    spec = IngestionSpec(name="n", source="gs://b/in/", format="csv", table="a.b", engine="spark")
    with pytest.raises(ConfigurationError, match="spark engine reads s3:// sources only"):
        spec.validate()
    IngestionSpec(name="n", source="s3://b/in/", format="csv", table="a.b", engine="spark").validate()
    incremental = IngestionSpec(name="n", source="az://c/in/", format="csv", table="a.b", listing="incremental")
    with pytest.raises(ConfigurationError, match="not available for Azure"):
        incremental.validate()
    IngestionSpec(name="n", source="file:///in/", format="csv", table="a.b", listing="incremental").validate()
