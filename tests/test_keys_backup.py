"""Cold backups: round trips for each method, and every way a backup can fail to restore."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pyrage
import pytest

from sbtc_ops.errors import SbtcOpsError, UsageError
from sbtc_ops.keys.backup import BackupReport, BackupRequest, create_backup
from sbtc_ops.keys.material import KeySource, SignerKey, parse_private_key
from sbtc_ops.keys.restore import RestoreFailed, classify, restore_age, restore_shares
from tests.support.keys import SampleKey, new_key

PASSPHRASE = "correct horse battery staple"


def signer_key(sample: SampleKey) -> SignerKey:
    return parse_private_key(sample.hex, KeySource("key-file", "test key"))


def backup(sample: SampleKey, out: Path, request: BackupRequest) -> BackupReport:
    with signer_key(sample) as key:
        return create_backup(key, out, request)


def files_of(report: BackupReport, role: str) -> list[Path]:
    return [item.path for item in report.files if item.role == role]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- age, passphrase ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def passphrase_backup(tmp_path_factory: pytest.TempPathFactory) -> tuple[SampleKey, BackupReport]:
    # scrypt at age's standard work factor costs about a second per use: share one backup.
    sample = new_key()
    out = tmp_path_factory.mktemp("keys") / "cold"
    return sample, backup(sample, out, BackupRequest("age-passphrase", passphrase=PASSPHRASE))


def test_passphrase_round_trip_and_private_files(
    passphrase_backup: tuple[SampleKey, BackupReport],
) -> None:
    sample, report = passphrase_backup
    assert report.read_back
    (age_file,) = files_of(report, "age")
    (sidecar,) = files_of(report, "sidecar")
    assert mode(report.out_dir) == 0o700
    assert mode(age_file) == 0o600 and mode(sidecar) == 0o600
    assert classify(age_file) == "age-passphrase"
    meta = json.loads(sidecar.read_text())
    assert meta["public_key"] == sample.public_key and meta["created_at"] == report.created_at
    assert sample.public_key[:16] in age_file.name
    # create_backup already restored it from disk (read_back); plain age restores the key in the signer's format, no sbtc-ops needed.
    assert (
        pyrage.passphrase.decrypt(age_file.read_bytes(), PASSPHRASE) == (sample.hex + "\n").encode()
    )


def test_wrong_passphrase_is_named(passphrase_backup: tuple[SampleKey, BackupReport]) -> None:
    _, report = passphrase_backup
    (age_file,) = files_of(report, "age")
    with pytest.raises(RestoreFailed) as info:
        restore_age(age_file, passphrase="not the passphrase at all")
    assert info.value.outcome == "wrong-passphrase"
    assert str(age_file) in info.value.message


def test_damaged_age_file_is_reported_as_corrupted(
    passphrase_backup: tuple[SampleKey, BackupReport], tmp_path: Path
) -> None:
    _, report = passphrase_backup
    (age_file,) = files_of(report, "age")
    damaged = tmp_path / "damaged.age"
    # A backup cut short (a bad copy): detected before any scrypt work.
    data = age_file.read_bytes()
    damaged.write_bytes(data[: data.index(b"\n---")])
    with pytest.raises(RestoreFailed) as info:
        restore_age(damaged, passphrase=PASSPHRASE)
    assert info.value.outcome == "corrupted" and str(damaged) in info.value.message


def test_an_existing_backup_is_never_overwritten(
    passphrase_backup: tuple[SampleKey, BackupReport],
) -> None:
    from sbtc_ops.keys.files import write_new_private_file

    _, report = passphrase_backup
    (age_file,) = files_of(report, "age")
    before = age_file.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        write_new_private_file(age_file, b"other")
    assert age_file.read_bytes() == before
    assert not [p for p in report.out_dir.iterdir() if p.name.endswith(".tmp")]


def test_short_passphrase_is_refused() -> None:
    from sbtc_ops.keys.secretio import require_strong_passphrase

    with pytest.raises(UsageError, match="at least 12"):
        require_strong_passphrase("short")


# -- age, recipients -----------------------------------------------------------------------------


def test_recipients_round_trip(tmp_path: Path) -> None:
    sample = new_key()
    first, second = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    request = BackupRequest(
        "age-recipients", recipients=(str(first.to_public()), str(second.to_public()))
    )
    report = backup(sample, tmp_path / "cold", request)
    (age_file,) = files_of(report, "age")
    assert classify(age_file) == "age-recipients"
    assert json.loads(files_of(report, "sidecar")[0].read_text())["recipients"] == list(
        request.recipients
    )
    for identity in (first, second):
        with restore_age(age_file, identities=[identity]) as restored:
            assert restored.public_key_hex == sample.public_key
    with pytest.raises(RestoreFailed) as info:
        restore_age(age_file, identities=[pyrage.x25519.Identity.generate()])
    assert info.value.outcome == "wrong-identity"


def test_bad_recipient_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not an age X25519 public key"):
        backup(new_key(), tmp_path / "cold", BackupRequest("age-recipients", recipients=("age1x",)))
    assert not (tmp_path / "cold").exists()


# -- SLIP-39 -------------------------------------------------------------------------------------


@pytest.fixture
def shares(tmp_path: Path) -> tuple[SampleKey, list[Path]]:
    sample = new_key()
    report = backup(sample, tmp_path / "shares", BackupRequest("slip39", shares=5, threshold=3))
    assert report.read_back
    return sample, files_of(report, "share")


def test_k_shares_restore_the_key(shares: tuple[SampleKey, list[Path]]) -> None:
    sample, paths = shares
    assert len(paths) == 5 and all(mode(path) == 0o600 for path in paths)
    assert [f"share-{n}-of-5" in path.name for n, path in enumerate(paths, start=1)] == [True] * 5
    for subset in (paths[:3], paths[2:], [paths[0], paths[2], paths[4]], paths):
        with restore_shares(subset) as restored:
            assert restored.public_key_hex == sample.public_key


def test_share_files_name_the_public_key_and_never_hold_the_key(
    shares: tuple[SampleKey, list[Path]],
) -> None:
    sample, paths = shares
    for path in paths:
        text = path.read_text()
        assert f"# public-key: {sample.public_key}" in text
        assert "# created-at: " in text
        assert not any(run in text for run in sample.forbidden_substrings())


def test_k_minus_one_shares_do_not_restore(shares: tuple[SampleKey, list[Path]]) -> None:
    _, paths = shares
    with pytest.raises(RestoreFailed) as info:
        restore_shares(paths[:2])
    assert info.value.outcome == "too-few-shares"
    assert "needs 3" in info.value.message
    # The same share twice is still one share.
    with pytest.raises(RestoreFailed, match="needs 3"):
        restore_shares([paths[0], paths[1], paths[1]])


def test_a_corrupted_share_is_named(shares: tuple[SampleKey, list[Path]]) -> None:
    _, paths = shares
    lines = paths[1].read_text().splitlines()
    words = lines[-1].split()
    words[3], words[4] = words[4], words[3]
    paths[1].write_text("\n".join([*lines[:-1], " ".join(words)]) + "\n")
    with pytest.raises(RestoreFailed) as info:
        restore_shares(paths[:3])
    assert info.value.outcome == "corrupted"
    assert info.value.files == [paths[1]]
    assert f"share file {paths[1]} is corrupted" in info.value.message
    assert words[3] not in info.value.message


def test_a_word_outside_the_wordlist_is_named_by_position(
    shares: tuple[SampleKey, list[Path]],
) -> None:
    _, paths = shares
    text = paths[0].read_text().splitlines()
    text[-1] = text[-1].replace(text[-1].split()[0], "bitcoin", 1)
    paths[0].write_text("\n".join(text) + "\n")
    with pytest.raises(RestoreFailed, match=r"word 23 is not a SLIP-39 word") as info:
        restore_shares(paths[:3])
    assert info.value.files == [paths[0]]


def test_shares_of_another_backup_are_named(
    shares: tuple[SampleKey, list[Path]], tmp_path: Path
) -> None:
    _, paths = shares
    other = backup(new_key(), tmp_path / "other", BackupRequest("slip39", shares=3, threshold=2))
    stranger = files_of(other, "share")[0]
    with pytest.raises(RestoreFailed) as info:
        restore_shares([*paths[:3], stranger])
    assert info.value.outcome == "mixed-share-sets"
    assert str(stranger) in info.value.message


@pytest.mark.parametrize(("count", "threshold"), [(3, 1), (2, 3), (17, 2), (1, 1)])
def test_share_parameters_are_checked(tmp_path: Path, count: int, threshold: int) -> None:
    with pytest.raises(UsageError):
        backup(
            new_key(), tmp_path / "s", BackupRequest("slip39", shares=count, threshold=threshold)
        )


# -- the output directory -------------------------------------------------------------------------


def test_a_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    with pytest.raises(UsageError, match="open to other users"):
        backup(new_key(), loose, BackupRequest("slip39", shares=3, threshold=2))
    assert list(loose.iterdir()) == []


def test_read_back_failure_is_an_error_not_a_success(tmp_path: Path) -> None:
    # A restore that yields another key must stop the command (simulated via the read-back).
    from sbtc_ops.keys import backup as backup_module

    report = BackupReport("slip39", new_key().public_key, "now", tmp_path)
    with pytest.raises(SbtcOpsError, match="restores a different key"):
        backup_module._read_back(report, lambda: signer_key(new_key()))
    assert not report.read_back


def test_passphrases_never_show_in_reprs() -> None:
    from sbtc_ops.keys.verify import Secrets

    secrets = Secrets(passphrase=lambda: PASSPHRASE)
    assert secrets.get_passphrase() == PASSPHRASE
    assert PASSPHRASE not in repr(secrets)
    assert PASSPHRASE not in repr(BackupRequest("age-passphrase", passphrase=PASSPHRASE))
