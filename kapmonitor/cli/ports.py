"""``kapmonitor ports``: the serial ports this machine has (pyserial's list_ports)."""

from __future__ import annotations

import argparse
import json

NAME = "ports"


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(NAME, parents=[common], help="list serial ports",
                       description="List the serial ports of this machine (USB adapters "
                       "included), to find the PORT for a device. Network device servers "
                       "are not listed: use socket://HOST:PORT.")
    p.add_argument("--json", action="store_true", help="one JSON array")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from serial.tools import list_ports

    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    rows = [{"port": p.device, "description": p.description, "hwid": p.hwid,
             "serial_number": p.serial_number, "manufacturer": p.manufacturer} for p in ports]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no serial ports found (a device server is reached as socket://HOST:PORT)")
    else:
        width = max(len(r["port"]) for r in rows)
        for r in rows:
            print(f"{r['port']:<{width}}  {r['description']}  [{r['hwid']}]")
    return 0
