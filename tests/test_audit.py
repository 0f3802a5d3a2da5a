"""The audit log (telesurg.record): an intact log verifies; every kind of tampering is caught at the
right entry; a crash is told apart from tampering; disk errors never reach the caller; the CLI."""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from telesurg.cli import main
from telesurg.link.keys import Identity, make_identity
from telesurg.record import FILE_RE, ZERO_HASH, audit, canonical, entry_hash, head_message, line_hash
from telesurg.record.audit import AuditLog
from telesurg.record.audit_cli import VerifyResult, verify

ROBOT = make_identity("robot")
MALLORY = make_identity("robot")  # same name, another key: what a forger without the site key has


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


def write_log(directory: Path, identity: Identity | None = ROBOT, entries: int = 30, *,
              rotate_bytes: int = 2500, close: bool = True) -> AuditLog:
    log = AuditLog(directory, "robot", identity, rotate_bytes=rotate_bytes, clock=Clock())
    for k in range(entries):
        log.append("transition", {"arm": "PSM1", "to": "hold" if k % 3 else "follow", "k": k}, t_local=k * 0.25)
    if close:
        log.close()
    return log


def files_of(directory: Path) -> list[Path]:
    return sorted((p for p in directory.iterdir() if FILE_RE.match(p.name)),
                  key=lambda p: int(FILE_RE.match(p.name)["n"]))  # type: ignore[index]


def entries_of(directory: Path) -> list[tuple[Path, int, dict[str, Any]]]:
    """(file, line number, entry) of every complete line, in log order."""
    out = []
    for path in files_of(directory):
        for lineno, line in enumerate(path.read_bytes().split(b"\n")[:-1], 1):
            out.append((path, lineno, json.loads(line)))
    return out


def where(directory: Path, i: int) -> str:
    path, lineno, _ = next(e for e in entries_of(directory) if e[2]["i"] == i)
    return f"{path.name}:{lineno}"


def index_of(directory: Path, kind: str, nth: int = 0) -> int:
    return [e["i"] for _, _, e in entries_of(directory) if e["kind"] == kind][nth]


def rewrite(directory: Path, i: int, mutate: Callable[[dict[str, Any]], None], *, rechain: bool = False,
            forger: Identity | None = None) -> None:
    """Change entry i. rechain: recompute its hash and every later prev, head last_hash and hash, as a
    forger would; forger: also re-sign every later head with that identity's key (not the site's)."""
    key = None if forger is None else serialization.load_pem_private_key(forger.key_pem, None)
    prev: str | None = None
    for path in files_of(directory):
        lines = path.read_bytes().split(b"\n")
        for n, line in enumerate(lines[:-1]):
            entry = json.loads(line)
            if entry["i"] == i:
                mutate(entry)
                if rechain:
                    entry["hash"] = entry_hash(entry)
            elif prev is not None:
                entry["prev"] = prev
                if entry["kind"] == "head":  # last_hash is not secret; only the signature needs a key
                    entry["data"]["last_hash"] = prev
                if entry["kind"] == "head" and key is not None:
                    entry["data"].update(cert_fingerprint=forger.fingerprint,
                                         signature=base64.b64encode(key.sign(head_message(prev))).decode())
                entry["hash"] = entry_hash(entry)
            lines[n] = canonical(entry).encode()
            if rechain and entry["i"] >= i:
                prev = line_hash(lines[n])
        path.write_bytes(b"\n".join(lines))


def check(result: VerifyResult, first_broken: int, *words: str, status: str = "broken") -> None:
    assert not result.ok, result
    assert result.status == status, result
    assert result.first_broken == first_broken, result
    for word in words:
        assert word in (result.problem or ""), result


# -- an intact log -----------------------------------------------------------------------------------


def test_intact_log_with_rotations_verifies_against_the_cert(tmp_path: Path) -> None:
    write_log(tmp_path, entries=40)
    files = files_of(tmp_path)
    assert len(files) >= 4
    result = verify(tmp_path, ROBOT.cert_pem)
    every = entries_of(tmp_path)
    assert result == VerifyResult(True, len(every), len(files), len(files))
    assert every[0][2]["prev"] == ZERO_HASH and [e["i"] for _, _, e in every] == list(range(len(every)))
    for prev_file, path in zip(files, files[1:], strict=False):  # each file chains to the last line of the one before
        header = json.loads(path.read_bytes().split(b"\n")[0])
        assert header["kind"] == "header" and header["data"]["previous_file"] == prev_file.name
        assert header["prev"] == line_hash(prev_file.read_bytes().split(b"\n")[-2])
    assert sum(e["kind"] == "transition" for _, _, e in every) == 40
    assert every[-1][2]["kind"] == "head" and every[-1][2]["data"]["reason"] == "close"


def test_one_file_alone_verifies_and_says_its_first_link_is_unchecked(tmp_path: Path) -> None:
    write_log(tmp_path)
    assert verify(files_of(tmp_path)[0], ROBOT.cert_pem).ok
    result = verify(files_of(tmp_path)[1], ROBOT.cert_pem)
    assert result.ok and result.files == 1 and "not checked" in (result.problem or "")


def test_without_the_cert_signatures_are_reported_unchecked(tmp_path: Path) -> None:
    write_log(tmp_path)
    result = verify(tmp_path)
    assert result.ok and "unsigned/unchecked" in (result.problem or "")


def test_a_log_without_identity_is_unsigned_and_a_cert_demands_signatures(tmp_path: Path) -> None:
    write_log(tmp_path, identity=None)
    result = verify(tmp_path)
    assert result.ok and result.signed_heads == 0 and "no signature" in (result.problem or "")
    check(verify(tmp_path, ROBOT.cert_pem), index_of(tmp_path, "head"), "unsigned")


# -- tampering ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("i", [1, 7, 29])
def test_editing_one_entrys_data_is_caught_at_that_entry(tmp_path: Path, i: int) -> None:
    write_log(tmp_path)
    rewrite(tmp_path, i, lambda e: e["data"].update(to="follow-edited"))
    result = verify(tmp_path, ROBOT.cert_pem)
    check(result, i, "hash does not match")
    assert result.where == where(tmp_path, i) and result.entries == i


def test_editing_a_head_or_header_is_caught_at_that_entry(tmp_path: Path) -> None:
    write_log(tmp_path)
    head = index_of(tmp_path, "head")
    rewrite(tmp_path, head, lambda e: e["data"].update(entries=1))
    check(verify(tmp_path, ROBOT.cert_pem), head, "hash")


def test_an_edit_with_a_recomputed_hash_is_caught_at_the_next_link(tmp_path: Path) -> None:
    write_log(tmp_path)
    def edit(entry: dict[str, Any]) -> None:  # its own hash recomputed, the next entry's prev left alone
        entry["data"]["to"] = "follow-edited"
        entry["hash"] = entry_hash(entry)

    rewrite(tmp_path, 5, edit)
    check(verify(tmp_path, ROBOT.cert_pem), 6, "prev does not match")


@pytest.mark.parametrize("i", [2, 9])
def test_deleting_a_line_names_the_missing_entry(tmp_path: Path, i: int) -> None:
    write_log(tmp_path)
    path, lineno, _ = next(e for e in entries_of(tmp_path) if e[2]["i"] == i)
    lines = path.read_bytes().split(b"\n")
    del lines[lineno - 1]
    path.write_bytes(b"\n".join(lines))
    check(verify(tmp_path, ROBOT.cert_pem), i, f"expected entry {i}, found entry {i + 1}")


def test_reordering_two_lines_names_the_first_out_of_place(tmp_path: Path) -> None:
    write_log(tmp_path)
    path, lineno, _ = next(e for e in entries_of(tmp_path) if e[2]["i"] == 3)
    lines = path.read_bytes().split(b"\n")
    assert json.loads(lines[lineno])["i"] == 4
    lines[lineno - 1], lines[lineno] = lines[lineno], lines[lineno - 1]
    path.write_bytes(b"\n".join(lines))
    check(verify(tmp_path, ROBOT.cert_pem), 3, "expected entry 3, found entry 4")


@pytest.mark.parametrize("rechain", [False, True], ids=["hash-left", "hash-recomputed"])
def test_changing_a_prev_is_caught_at_that_entry(tmp_path: Path, rechain: bool) -> None:
    write_log(tmp_path)
    rewrite(tmp_path, 8, lambda e: e.update(prev="ab" * 32), rechain=rechain)
    check(verify(tmp_path, ROBOT.cert_pem), 8, "prev does not match" if rechain else "hash does not match")


def test_a_head_signed_with_another_key_is_caught_at_that_head(tmp_path: Path) -> None:
    write_log(tmp_path)
    head = index_of(tmp_path, "head", 1)
    key = serialization.load_pem_private_key(MALLORY.key_pem, None)
    rewrite(tmp_path, head, lambda e: e["data"].update(
        signature=base64.b64encode(key.sign(head_message(e["prev"]))).decode()), rechain=True)
    assert verify(tmp_path).ok  # the chain itself is consistent again: only the signature tells
    check(verify(tmp_path, ROBOT.cert_pem), head, "signature does not verify")


def test_a_log_rewritten_and_resigned_by_a_forger_fails_at_the_first_head(tmp_path: Path) -> None:
    write_log(tmp_path)
    rewrite(tmp_path, 2, lambda e: e["data"].update(to="nothing happened"), rechain=True, forger=MALLORY)
    assert verify(tmp_path, MALLORY.cert_pem).ok  # consistent under the forger's own certificate
    check(verify(tmp_path, ROBOT.cert_pem), index_of(tmp_path, "head"), "names certificate")


def test_a_missing_file_in_the_middle_is_caught(tmp_path: Path) -> None:
    write_log(tmp_path)
    files_of(tmp_path)[1].unlink()
    result = verify(tmp_path, ROBOT.cert_pem)
    assert not result.ok and result.status == "broken" and "robot-audit-1.jsonl is missing" in (result.problem or "")


@pytest.mark.parametrize("junk", [b"", b"not json", b"[1, 2]", b'{"i": 3}', b"\xff\xfe\x00", b'{"i":"3","hash":1}'])
def test_junk_lines_are_broken_entries_never_a_traceback(tmp_path: Path, junk: bytes) -> None:
    write_log(tmp_path)
    path, lineno, _ = next(e for e in entries_of(tmp_path) if e[2]["i"] == 3)
    lines = path.read_bytes().split(b"\n")
    lines[lineno - 1] = junk
    path.write_bytes(b"\n".join(lines))
    result = verify(tmp_path, ROBOT.cert_pem)
    check(result, 3)
    assert result.where == f"{path.name}:{lineno}"


# -- crashes -----------------------------------------------------------------------------------------


def cut_last_line(path: Path, keep: int = 40) -> int:
    """Leave the disk as a crash in the middle of writing the last line would; returns its index."""
    raw = path.read_bytes()
    start = raw.rstrip(b"\n").rfind(b"\n") + 1
    index = json.loads(raw[start:])["i"]
    path.write_bytes(raw[:start + keep])
    return index


def test_a_truncated_last_line_is_a_crash_and_the_entries_before_verify(tmp_path: Path) -> None:
    write_log(tmp_path)
    lost = cut_last_line(files_of(tmp_path)[-1])
    result = verify(tmp_path, ROBOT.cert_pem)
    check(result, lost, "crash, not tampering", f"the {lost} entries before it verify", status="truncated")
    assert result.entries == lost


def test_a_log_without_a_final_head_reports_not_closed(tmp_path: Path) -> None:
    log = write_log(tmp_path, close=False)
    try:
        every = entries_of(tmp_path)
        last_head = max(e["i"] for _, _, e in every if e["kind"] == "head")
        result = verify(tmp_path, ROBOT.cert_pem)
        n = every[-1][2]["i"] - last_head
        check(result, last_head + 1, f"not closed: the last {n} entries after the last signed head", "not evidence of tampering",
              status="not_closed")
        assert result.entries == len(every)
    finally:
        log.close()
    assert verify(tmp_path, ROBOT.cert_pem).ok


def test_a_restart_after_a_crash_continues_and_covers_the_chain(tmp_path: Path) -> None:
    write_log(tmp_path)
    cut_last_line(files_of(tmp_path)[-1])
    before = len(files_of(tmp_path))
    log = AuditLog(tmp_path, "robot", ROBOT, rotate_bytes=2500)
    log.append("start", {"version": "0.1.0", "after": "crash"})
    log.close()
    header = json.loads(files_of(tmp_path)[-1].read_bytes().split(b"\n")[0])
    assert len(files_of(tmp_path)) == before + 1
    assert header["data"]["resumed"] == {"previous_closed": False, "partial_bytes": 40}
    result = verify(tmp_path, ROBOT.cert_pem)
    assert result.ok, result
    log = AuditLog(tmp_path, "robot", ROBOT)  # and after a clean close
    log.append("start", {"version": "0.1.0"})
    log.close()
    assert verify(tmp_path, ROBOT.cert_pem).ok


# -- disk errors, threads, durability -----------------------------------------------------------------


def enospc(fd: int, data: bytes) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_never_raises_is_counted_and_later_appends_succeed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    log = AuditLog(tmp_path, "robot", ROBOT)
    log.append("start", {"version": "0.1.0"})
    monkeypatch.setattr(audit, "_write_all", enospc)
    with caplog.at_level(logging.ERROR, logger="telesurg.record.audit"):
        for _ in range(3):
            log.append("hold", {"arm": "PSM1"})
        log.append("override", {"arm": "PSM2"})
    assert log.stats()["lost"] == 4 and log.stats()["write_errors"] == 4
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "No space left" in errors[0].getMessage()
    monkeypatch.undo()
    log.append("handover", {"arm": "PSM1", "to": "consultant"})
    log.close()
    kinds = [e["kind"] for _, _, e in entries_of(tmp_path)]
    assert kinds == ["header", "start", "lost", "handover", "head"]
    lost = next(e for _, _, e in entries_of(tmp_path) if e["kind"] == "lost")["data"]
    assert lost["entries"] == 4 and lost["kinds"] == {"hold": 3, "override": 1} and "ENOSPC" not in lost["kinds"]
    assert verify(tmp_path, ROBOT.cert_pem).ok


def test_a_full_disk_when_the_first_file_opens_leaves_no_half_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "_write_all", enospc)
    log = AuditLog(tmp_path, "robot", ROBOT)
    log.append("start", {})
    assert files_of(tmp_path) == [] and log.stats()["lost"] == 1
    monkeypatch.undo()
    log.append("start", {"retry": True})
    log.close()
    assert verify(tmp_path, ROBOT.cert_pem).ok and len(files_of(tmp_path)) == 1


def test_a_partly_written_line_is_cut_back_before_the_next_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(tmp_path, "robot", ROBOT)
    log.append("start", {})

    def half_then_full(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        enospc(fd, data)

    monkeypatch.setattr(audit, "_write_all", half_then_full)
    log.append("hold", {"arm": "PSM1"})
    monkeypatch.undo()
    log.append("hold", {"arm": "PSM2"})
    log.close()
    assert verify(tmp_path, ROBOT.cert_pem).ok


def test_unserializable_data_and_appends_after_close_never_raise(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "robot", ROBOT)
    log.append("config", {"path": tmp_path, 1: "mixed keys", "k": "v"})
    log.append("config", {"path": tmp_path})
    log.append("config", None)  # type: ignore[arg-type]
    log.close()
    log.append("late", {})
    assert log.stats()["dropped_after_close"] == 1
    data = [e["data"] for _, _, e in entries_of(tmp_path) if e["kind"] == "config"]
    assert "unserializable" in data[0] and data[1:] == [{"path": str(tmp_path)}, {"value": None}]
    assert verify(tmp_path, ROBOT.cert_pem).ok


def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "robot", ROBOT, rotate_bytes=20_000)

    def worker(name: str) -> None:
        for k in range(250):
            log.append("event", {"thread": name, "k": k})

    threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert verify(tmp_path, ROBOT.cert_pem).ok
    events = [e["data"] for _, _, e in entries_of(tmp_path) if e["kind"] == "event"]
    assert len(events) == 1000 and len(files_of(tmp_path)) > 1
    for n in range(4):
        assert [d["k"] for d in events if d["thread"] == f"t{n}"] == list(range(250))


def test_rotation_by_time(tmp_path: Path) -> None:
    clock = Clock()
    log = AuditLog(tmp_path, "robot", ROBOT, rotate_s=60.0, clock=clock)
    log.append("a", {})
    clock.t += 61
    log.append("b", {})
    log.close()
    assert len(files_of(tmp_path)) == 2 and verify(tmp_path, ROBOT.cert_pem) == VerifyResult(True, 6, 2, 2)


def test_fsync_is_batched_yet_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    interval = 0.2
    log = AuditLog(tmp_path, "robot", ROBOT, sync_interval_s=interval)
    log.append("start", {})  # opens the file (its header is fsynced)
    real_fsync, calls = os.fsync, []
    monkeypatch.setattr(audit.os, "fsync", lambda fd: (calls.append(time.monotonic()), real_fsync(fd)))
    t0 = time.monotonic()
    for k in range(60):  # a steady trickle over ~0.6 s: one fsync per entry would be ~60
        last_append = time.monotonic()  # before the append: an fsync that covers it starts after this
        log.append("event", {"k": k})
        time.sleep(0.01)
    deadline = last_append + 5.0
    while (not calls or calls[-1] < last_append) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls and calls[-1] >= last_append, "the last entries were never fsynced"
    assert len(calls) <= 2 + (time.monotonic() - t0) / interval, "more than one fsync per interval"
    log.close()


# -- the command line --------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["audit", "verify", *argv])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_cli_intact_broken_and_not_closed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert = tmp_path / "robot.crt"
    cert.write_bytes(ROBOT.cert_pem)
    logs = tmp_path / "logs"
    write_log(logs)
    n, files = len(entries_of(logs)), len(files_of(logs))
    assert run_cli(capsys, str(logs), "--cert", str(cert)) == (
        0, f"intact: {n} entries in {files} files, {files} signed heads", "")
    code, out, _ = run_cli(capsys, str(logs))
    assert code == 0 and "unsigned/unchecked" in out and "\n" not in out
    rewrite(logs, 4, lambda e: e["data"].update(k=99))
    code, out, _ = run_cli(capsys, str(logs), "--cert", str(cert))
    assert code == 1 and out.startswith(f"BROKEN at entry 4 ({where(logs, 4)}): hash does not match") and "\n" not in out
    crashed = tmp_path / "crashed"
    log = write_log(crashed, close=False)
    code, out, _ = run_cli(capsys, str(crashed), "--cert", str(cert))
    log.close()
    assert code == 1 and out.startswith("not closed: ") and "not evidence of tampering" in out and "\n" not in out


def test_cli_unusable_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, str(tmp_path / "nowhere.jsonl"))
    assert (code, out) == (2, "") and "no such file" in err and "\n" not in err
    text = tmp_path / "notes.txt"
    text.write_text("hello\nworld\n")
    code, out, err = run_cli(capsys, str(text))
    assert (code, out) == (2, "") and "not a telesurg audit log" in err
    code, _, err = run_cli(capsys, str(tmp_path))
    assert code == 2 and "no <site>-audit-<n>.jsonl files" in err
    write_log(tmp_path / "logs")
    code, _, err = run_cli(capsys, str(tmp_path / "logs"), "--cert", str(text))
    assert code == 2 and "not a PEM X.509 certificate" in err
