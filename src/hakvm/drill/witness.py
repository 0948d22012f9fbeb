"""The acknowledged-write witness of the failure drills.

On the active node a small stdlib-only program (WITNESS_SCRIPT, run as `python3 -c`) writes
numbered 4 KiB records with O_DIRECT|O_DSYNC to a DRBD device and prints `ack <seq>` only
after each write returned; the drill collects those lines over SSH as they arrive. After the
fault the same program, in read mode on the survivor, lists the records it finds, and
`verify` checks that every acknowledged number that can still be on disk is there.

Record (one 4096-byte block, little-endian):

    offset  size  field
         0     8  magic b"HAKVMWIT"
         8     8  run_id, u64 (random per drill: records of other runs are ignored)
        16     8  seq, u64, 1, 2, 3, ...
        24     4  crc32 of bytes 0..23, u32 (a torn or stale block fails it)
        28  4068  zeros

Record `seq` lives in slot (seq - 1) % SLOTS of the region, i.e. at
OFFSET + ((seq - 1) % SLOTS) * 4096: the region is a ring.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hakvm.drill.harness import Cluster, DrillError, DrillResult, Say
from hakvm.remote.connection import NodeConnection, Remote, RemoteError

WITNESS_SLOTS = 4096  # 16 MiB of 4 KiB records
WITNESS_RATE = 20  # records per second: plenty of numbers, little load on a slow node
BLOCK = 4096
MAGIC = b"HAKVMWIT"
MIN_OFFSET = 1024 * 1024  # partition tables and boot code live in the first MiB
_HEAD = struct.Struct("<8sQQ")
_CRC = struct.Struct("<I")

WITNESS_SCRIPT = r"""
import mmap, os, struct, sys, time, zlib

WITNESS_SLOTS = 4096  # 16 MiB of 4 KiB records
WITNESS_RATE = 20  # records per second: plenty of numbers, little load on a slow node
BLOCK = 4096
MAGIC = b"HAKVMWIT"
HEAD = struct.Struct("<8sQQ")  # magic, run_id, seq; then u32 crc32 of these 24 bytes
CRC = struct.Struct("<I")
READ_CHUNK = 256  # blocks per O_DIRECT read


def usage(message):
    sys.stderr.write("witness: " + message + "\n")
    sys.exit(2)


def number(text, what, low, high, kind=int):
    try:
        value = kind(text)
    except ValueError:
        usage(what + " must be a number, not " + repr(text))
    if not low <= value <= high:
        usage(what + " out of range: " + text)
    return value


def parse(argv):
    counts = {"write": 6, "read": 5}
    if len(argv) < 1 or argv[0] not in counts or len(argv) != counts[argv[0]]:
        usage("usage: write DEVICE OFFSET SLOTS RUN_ID RATE | read DEVICE OFFSET SLOTS RUN_ID")
    offset = number(argv[2], "OFFSET", 0, 2**63)
    if offset % BLOCK:
        usage("OFFSET must be a multiple of 4096 (O_DIRECT)")
    slots = number(argv[3], "SLOTS", 2, 2**32)
    run_id = number(argv[4], "RUN_ID", 0, 2**64 - 1)
    rate = number(argv[5], "RATE", 1e-3, 1e6, float) if argv[0] == "write" else 0.0
    return argv[0], argv[1], offset, slots, run_id, rate


def fits(fd, offset, slots):
    # Past the end a block device fails and a file grows: refuse both up front.
    if offset + slots * BLOCK > os.lseek(fd, 0, os.SEEK_END):
        usage("region beyond the end of the device")


def say(line):
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # The drill hung up: leave quietly (and keep the exit-time flush from complaining).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def write(device, offset, slots, run_id, rate):
    try:
        fd = os.open(device, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
    except OSError as e:
        say("error %d %s" % (e.errno, e.strerror))
        sys.exit(1)
    fits(fd, offset, slots)
    buf = mmap.mmap(-1, BLOCK)  # anonymous mmap: page-aligned and zeroed, as O_DIRECT needs
    seq = 0
    while True:
        seq += 1
        started = time.monotonic()
        head = HEAD.pack(MAGIC, run_id, seq)
        buf[: HEAD.size + CRC.size] = head + CRC.pack(zlib.crc32(head))
        try:
            done = os.pwrite(fd, buf, offset + ((seq - 1) % slots) * BLOCK)
        except OSError as e:
            say("error %d %s" % (e.errno, e.strerror))
            sys.exit(1)
        if done != BLOCK:
            say("error 0 short write of %d bytes" % done)
            sys.exit(1)
        # DRBD protocol C completes a write only once it is on both nodes' disks, and
        # O_DIRECT|O_DSYNC returns only after that completion: from here on the record
        # survives the loss of either node, so it may be acknowledged.
        say("ack %d" % seq)
        time.sleep(max(0.0, started + 1.0 / rate - time.monotonic()))


def read(device, offset, slots, run_id):
    try:
        fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
        fits(fd, offset, slots)
        buf = mmap.mmap(-1, READ_CHUNK * BLOCK)
        slot = 0
        while slot < slots:
            count = min(READ_CHUNK, slots - slot)
            view = memoryview(buf)[: count * BLOCK]
            if os.preadv(fd, [view], offset + slot * BLOCK) != count * BLOCK:
                raise OSError(0, "short read")
            for i in range(count):
                seq = valid(buf[i * BLOCK : i * BLOCK + HEAD.size + CRC.size], run_id)
                # A record outside its own slot is not one this run wrote there.
                if seq and (seq - 1) % slots == slot + i:
                    sys.stdout.write("found %d\n" % seq)
            view.release()
            slot += count
    except OSError as e:
        sys.stderr.write("witness: %s: %s\n" % (device, e.strerror))
        sys.exit(1)


def valid(block, run_id):
    magic, rid, seq = HEAD.unpack(block[: HEAD.size])
    (crc,) = CRC.unpack(block[HEAD.size :])
    if magic != MAGIC or rid != run_id or crc != zlib.crc32(block[: HEAD.size]):
        return 0
    return seq


mode, device, offset, slots, run_id, rate = parse(sys.argv[1:])
if mode == "write":
    write(device, offset, slots, run_id, rate)
else:
    read(device, offset, slots, run_id)
"""


# Every witness command line holds the script, and with it MAGIC: a pattern for `pgrep -f`
# that matches it, but not itself (nor the shell that runs pgrep).
LEFTOVER_PATTERN = "HAKVMWI[T]"


async def stop_leftovers(conn: Remote) -> list[str]:
    """Stop witness processes still running on `conn`'s node (a drill whose client vanished
    without closing its connection leaves its writer there); what was stopped."""
    found = await conn.run(["pgrep", "-f", LEFTOVER_PATTERN], timeout=60)
    pids = found.stdout.split() if found.ok else []
    if not pids:
        return []
    await conn.run(["kill", "--", *pids], timeout=60)
    return [f"{conn.name}: stopped witness process(es) left behind: pid {', '.join(pids)}"]


class WitnessError(RemoteError):
    """The witness stopped by itself with an error; `acked` still holds what it reported."""

    def __init__(self, message: str, acked: list[int]) -> None:
        super().__init__(message)
        self.acked = acked


@dataclass(frozen=True)
class WitnessVerdict:
    """What the region on the survivor says about the acknowledged writes.

    In a ring only the newest records survive, so only acknowledged numbers newer than
    `newest + 1 - slots` are checked (`checked` of them), `newest` being the highest
    number written (found on disk or acknowledged). The writer may have died with record
    newest + 1 in flight: that write may already have replaced slot newest + 1 - slots, so
    that one is not checked either and at most SLOTS - 1 numbers are."""

    acked: int
    last_acked: int | None
    checked: int
    lost: tuple[int, ...]

    @property
    def ok(self) -> bool:
        """Nothing acknowledged is missing, and something was checked: a drill in which no
        write was acknowledged proves nothing."""
        return self.checked > 0 and not self.lost


def encode_record(run_id: int, seq: int) -> bytes:
    """One record exactly as WITNESS_SCRIPT writes it."""
    head = _HEAD.pack(MAGIC, run_id, seq)
    return (head + _CRC.pack(zlib.crc32(head))).ljust(BLOCK, b"\0")


def _check(offset: int, slots: int, run_id: int) -> None:
    if offset < 0 or offset % BLOCK:
        raise ValueError(f"witness offset {offset} is not a non-negative multiple of {BLOCK}")
    if slots < 2:
        raise ValueError(f"witness needs at least 2 slots, not {slots}")
    if not 0 <= run_id < 2**64:
        raise ValueError(f"witness run id {run_id} is not a u64")


def write_argv(device: str, offset: int, slots: int, run_id: int, rate: float) -> list[str]:
    _check(offset, slots, run_id)
    if rate <= 0:
        raise ValueError(f"witness rate must be positive, not {rate}")
    args = [device, str(offset), str(slots), str(run_id), str(rate)]
    return ["python3", "-c", WITNESS_SCRIPT, "write", *args]


def read_argv(device: str, offset: int, slots: int, run_id: int) -> list[str]:
    _check(offset, slots, run_id)
    return ["python3", "-c", WITNESS_SCRIPT, "read", device, str(offset), str(slots), str(run_id)]


_ACK = re.compile(r"ack (\d+)")
_FOUND = re.compile(r"found (\d+)")


def _numbers(text: str, pattern: re.Pattern[str], skip: tuple[str, ...]) -> list[int]:
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(skip):
            continue
        match = pattern.fullmatch(line.strip())
        if match is None:
            raise ValueError(f"unexpected witness output line {line!r}")
        out.append(int(match.group(1)))
    return out


def parse_acks(text: str) -> list[int]:
    """The acknowledged numbers in the order reported; `error ...` lines are not acks."""
    return _numbers(text, _ACK, ("error ",))


def parse_found(text: str) -> set[int]:
    return set(_numbers(text, _FOUND, ()))


def verify(acked: Sequence[int], found: set[int], slots: int) -> WitnessVerdict:
    """Which acknowledged numbers are missing from the region (see WitnessVerdict for
    which ones can be checked at all)."""
    last = max(acked) if acked else None
    newest = max([*found, last or 0])
    checked = {seq for seq in acked if seq >= newest + 2 - slots}
    return WitnessVerdict(
        acked=len(acked), last_acked=last, checked=len(checked), lost=tuple(sorted(checked - found))
    )


def region(device_size_bytes: int, slots: int) -> int:
    """Offset of the last `slots` blocks of the device: far from the boot sector and the
    partition table at its start."""
    offset = device_size_bytes // BLOCK * BLOCK - slots * BLOCK
    if offset < MIN_OFFSET:
        raise ValueError(
            f"device of {device_size_bytes} bytes too small for a {slots}-slot witness region "
            f"that stays clear of its first {MIN_OFFSET // 1024 // 1024} MiB"
        )
    return offset


async def run_witness(  # noqa: PLR0917 - the drill passes the region positionally
    conn: NodeConnection,
    device: str,
    offset: int,
    slots: int,
    run_id: int,
    rate: float,
    stop: asyncio.Event,
    timeout: float,
    *,
    on_ack: Callable[[int], None] | None = None,
) -> list[int]:
    """Run the writer on `conn` until `stop` is set, `timeout` passes or the node is lost,
    and return every number it acknowledged. Raises WitnessError if the writer ended by
    itself with an error (bad device, write error): its acks are on the exception."""
    acked: list[int] = []
    errors: list[str] = []

    def line(text: str) -> None:
        if text.startswith("error "):
            errors.append(text)
            return
        (seq,) = parse_acks(text)
        acked.append(seq)
        if on_ack is not None:
            on_ack(seq)

    argv = write_argv(device, offset, slots, run_id, rate)
    result = await conn.stream(argv, line, timeout=timeout, stop=stop)
    if result.ended == "exit" and result.exit_status != 0:
        detail = (errors or result.stderr.strip().splitlines() or ["no output"])[-1]
        raise WitnessError(
            f"{conn.name}: witness on {device} exited {result.exit_status} after "
            f"{len(acked)} ack(s): {detail}",
            acked,
        )
    return acked


async def read_witness(
    conn: NodeConnection, device: str, offset: int, slots: int, run_id: int
) -> set[int]:
    """The sequence numbers of this run's valid records in the region on `conn`'s node."""
    # Not check=True: its message would quote the whole script.
    result = await conn.run(read_argv(device, offset, slots, run_id), timeout=120)
    if not result.ok:
        detail = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise RemoteError(f"{conn.name}: witness read of {device} failed: {detail}")
    return parse_found(result.stdout)


# --- the witness in a drill ---------------------------------------------------------------

@dataclass
class Witness:
    node: str
    vm: str
    device: str
    offset: int
    run_id: int
    stop: asyncio.Event
    task: asyncio.Task[list[int]]


async def start_witness(cluster: Cluster, node: str, vm: str, say: Say) -> Witness:
    conn = await cluster.conn(node)
    minor = (await conn.run(["drbdadm", "sh-minor", vm], check=True)).stdout.strip()
    device = f"/dev/drbd{minor}"
    size = int((await conn.run(["blockdev", "--getsize64", device], check=True)).stdout)
    offset = region(size, WITNESS_SLOTS)
    run_id = secrets.randbits(63)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_witness(conn, device, offset, WITNESS_SLOTS, run_id, WITNESS_RATE, stop, 3600)
    )
    say(f"witness writing to {device} ({vm}) on {node}")
    return Witness(node, vm, device, offset, run_id, stop, task)


async def finish_witness(cluster: Cluster, w: Witness, reader: str, result: DrillResult) -> None:
    """Stop the writer (if it still runs), read the region on `reader`, check every ack."""
    w.stop.set()
    try:
        acked = await asyncio.wait_for(w.task, timeout=120)
    except (TimeoutError, RemoteError) as exc:
        result.check("acknowledged writes", False, f"witness lost: {exc}")
        return
    try:
        conn = await cluster.conn(reader)
        found = await read_witness(conn, w.device, w.offset, WITNESS_SLOTS, w.run_id)
    except RemoteError as exc:  # the reader itself was lost: a failed drill, not a lost one
        result.check("acknowledged writes", False, f"not read back on {reader}: {exc}")
        return
    verdict = verify(acked, found, WITNESS_SLOTS)
    result.witness = {
        "writer": w.node,
        "reader": reader,
        "device": w.device,
        "acked": len(acked),
        "last_acked": max(acked) if acked else None,
        "lost": list(verdict.lost),
    }
    detail = (
        f"{len(acked)} acknowledged on {w.node}, all read back on {reader}"
        if verdict.ok
        else f"{len(verdict.lost)} acknowledged record(s) missing on {reader}: "
        f"{list(verdict.lost)[:10]}"
    )
    result.check("acknowledged writes", verdict.ok and len(acked) > 0, detail)


async def wait_acks(w: Witness, seconds: float = 15) -> None:
    """Let the witness get going before the fault; a witness that already ended failed."""
    await asyncio.sleep(seconds)
    if w.task.done():
        try:
            acked = w.task.result()
        except RemoteError as exc:  # WitnessError: the writer failed by itself
            raise DrillError(f"drill: the witness on {w.node} failed: {exc}") from None
        raise DrillError(f"drill: the witness on {w.node} stopped early ({len(acked)} acks)")
