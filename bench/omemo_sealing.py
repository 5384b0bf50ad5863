"""``python -m bench.omemo_sealing``: the legacy-OMEMO sender's CPU cost (item h).

The app's OMEMO device (one ``OmemoSender``, the only instance of the app, so python-omemo's
encrypt covers no other own device) seals an OTP body to one recipient with 1, then 2, then
5 OMEMO devices. Each recipient device is an ``OmemoSender`` of its own in its own
temporary state directory; all publish into an in-memory relay, so no network cost is in
the figures. Before the clock starts, each device decrypts a first message and answers with
its key transport, as a client does: what is timed is the common case, a session in place.
One ``encrypt`` then refreshes the recipient's device list (fetch and schema check), takes
one double-ratchet step per device, rewrites the state file per step (fsync'd: in the wall
time, not in the CPU time) and serialises the ``<encrypted/>`` element.

The first message to a device (bundle fetch and check, pinning its key, X3DH, a prekey
message) is timed separately, to fresh recipients that each list one device and publish a
copy of a real device's bundle: the sender's work is the same as for a genuine new device.
Every loop is bounded by a count and by a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

from bench.report import RESULTS_DIR, write_document
from bench.timing import measure_async
from cmaas.clientservice.omemo import (
    Encrypted,
    OmemoSender,
)
from cmaas.clientservice.omemo.memory import MemoryDirectory

__all__ = ["DEVICE_COUNTS", "FIRST_MESSAGE", "main", "steady_name"]

APP = "bank@gateway.example.org"
RECIPIENT = "alice@example.org"
OTP = b"Your login code is 123456"
DEVICE_COUNTS = (1, 2, 5)
FIRST_MESSAGE = "first message to a new device (X3DH)"
# Ratchet steps before the clock starts, so that the first timed call is not the first of
# its kind.
WARMUP = 5


def steady_name(devices: int) -> str:
    return f"encrypt OTP to {devices} device(s), sessions established"


class SetupFailed(RuntimeError):
    """The sessions to measure could not be established as expected."""


async def _establish(
    app: OmemoSender, relay: MemoryDirectory, devices: dict[int, OmemoSender], new: list[int]
) -> None:
    """Seal one message to ``RECIPIENT``, let each ``new`` device open it and answer with its
    key transport, and open those: from then on every message is a plain ratchet step. The
    other devices do not open it (they would only skip over the timed messages).

    Raises: SetupFailed: The message does not cover exactly ``devices``, or a new device
        opened something else.
    """
    sealed = await app.encrypt(RECIPIENT, OTP)
    if sealed.device_ids != set(devices) or sealed.skipped:
        raise SetupFailed(
            f"sealed to {sorted(sealed.device_ids)}, expected {sorted(devices)}; "
            f"skipped {sealed.skipped}"
        )
    for device_id in new:
        opened = await devices[device_id].decrypt(APP, sealed.xml)
        if opened.plaintext != OTP:
            raise SetupFailed("a recipient device opened something else than the OTP")
    for answer in relay.take(APP):
        await app.decrypt(RECIPIENT, answer)


async def measure(count: int, first_count: int, deadline: float) -> dict[str, dict[str, float]]:
    """Per-run figures (``bench.timing.summary``) by measurement name.

    Raises: SetupFailed: See :func:`_establish`; also if a timed message is not what the
        measurement claims (a prekey message in the steady state, or the reverse).
    """
    relay = MemoryDirectory()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="cmaas-bench-omemo-") as workdir:
        root = Path(workdir)
        async with AsyncExitStack() as stack:
            app = await stack.enter_async_context(OmemoSender(root / "app", APP, relay))
            devices: dict[int, OmemoSender] = {}
            single_device_list = ""
            for wanted in DEVICE_COUNTS:
                new: list[int] = []
                while len(devices) < wanted:
                    device = await stack.enter_async_context(
                        OmemoSender(root / f"device-{len(devices)}", RECIPIENT, relay)
                    )
                    device_id, _ = await device.own_device()
                    devices[device_id] = device
                    new.append(device_id)
                    if len(devices) == 1:
                        single_device_list = relay.device_lists[RECIPIENT]
                await _establish(app, relay, devices, new)
                for _ in range(WARMUP):
                    await app.encrypt(RECIPIENT, OTP)
                name = steady_name(wanted)
                results[name] = await measure_async(
                    name, lambda: app.encrypt(RECIPIENT, OTP), count, deadline
                )
                check = await app.encrypt(RECIPIENT, OTP)
                if 'prekey="true"' in check.xml or check.device_ids != set(devices):
                    raise SetupFailed(f"{name}: not a plain ratchet step to every device")

            # Fresh recipients, each listing the first device and publishing its bundle.
            first_id = next(iter(devices))
            bundle = relay.bundles[(RECIPIENT, first_id)]
            newcomers = [f"new-{n}@example.org" for n in range(first_count)]
            for jid in newcomers:
                relay.device_lists[jid] = single_device_list
                relay.bundles[(jid, first_id)] = bundle
            pending = iter(newcomers)
            firsts: list[Encrypted] = []

            async def first_message() -> None:
                firsts.append(await app.encrypt(next(pending), OTP))

            results[FIRST_MESSAGE] = await measure_async(
                FIRST_MESSAGE, first_message, first_count, deadline
            )
            if not all('prekey="true"' in sealed.xml for sealed in firsts):
                raise SetupFailed(f"{FIRST_MESSAGE}: not every message was a prekey message")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.omemo_sealing", description=__doc__)
    parser.add_argument("--count", type=int, default=50, help="encrypts per device count")
    parser.add_argument("--first", type=int, default=10, help="first messages (X3DH)")
    parser.add_argument("--deadline", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "omemo.json")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 100_000 or not 1 <= args.first <= 10_000 or args.deadline <= 0:
        parser.error("--count must be 1 to 100,000, --first 1 to 10,000, --deadline positive")
    print("legacy OMEMO (python-omemo + oldmemo), one app device:")
    try:
        results = asyncio.run(measure(args.count, args.first, args.deadline))
    except SetupFailed as error:
        print(f"setup failed: {error}", file=sys.stderr)
        return 1
    write_document(args.output, {"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
