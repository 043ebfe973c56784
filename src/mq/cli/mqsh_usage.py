"""``mq.sh``'s usage texts, as current seL4 master prints them (``../shared/reference/mq-sh.md``)."""

from __future__ import annotations

from typing import List


def usage(prog: str) -> List[str]:
    return ["Machine Queue", "", " Commands:", "", "  run      Run a new job on a machine",
            "  systems  Query information on available machines", "",
            "  sem      Directly interact with the machine locks", "",
            f"Use '{prog} COMMAND help' to get detailed help for each command"]


def sem_usage(prog: str) -> List[str]:
    return [
        f"{prog} sem -signal|-wait|-cancel|-info SYSTEM [-f] [-w retry-time] [-t retry-count] [-k LOCK_KEY]",
        f"{prog} sem dumpall",
        "",
        "   Manually manipulate locks for machines. The lock for each system",
        "   can be acquired or released.",
        "",
        "   You can forcibly release a lock for a system that you do not",
        "   currently own by the -f flag",
        "",
        " Options:",
        "",
        " -info SYSTEM     Display lock information for the specified SYSTEM",
        " -mr-info SYSTEM  Display lock information for the specified SYSTEM in machine-readable format",
        " -signal SYSTEM   Release the lock for the specified SYSTEM",
        " -wait SYSTEM     Acquire the lock for the specified SYSTEM",
        " -cancel SYSTEM   Cancel '-wait' processes on the server that are waiting for specified SYSTEM and key",
        " -w TIME          Number of seconds to wait between each attempt to acquire the lock (default 8)",
        " -t RETRIES       Number of retries to preform for acquiring the lock (default -1)",
        " -f               Forcefully releases a lock even if you are not the owner",
        " -k LOCK_KEY      Set a key inside the lock",
        " -T timeout       Allow lock to be reclaimed after timeout seconds",
        " dumpall          Prints all currently locked systems",
        "",
    ]


def run_usage(prog: str) -> List[str]:
    return [
        f"{prog} run -r|-c <string> [-l logfile] -s system [-w retry-time] [-t retry-count] [-n] [-a] "
        "[-d timeout] [-e <string>] [-k <string>] [-L] [-b dtb] [--bitstream file] -f file1 [-f file2] .. [-f filen]",
        "",
        "   Acquires a lock for the machine called system (or a machine in the pool",
        "   called system), and, once locked, runs the specified job.",
        "",
        " Options:",
        "",
        " -r          Reserves the device. Will not reboot or run an image",
        " -n          No lock changes. Checks that you have the lock, and then runs an image. "
        "Will not unlock afterwards.",
        " -a          Keep the machine alive after completion or error text detected",
        " -c TEXT     Image is run until the specified regular completion text",
        " -e TEXT     Image is run until the specified error text is found",
        " -d TIME     Timeout (in seconds) to wait for the completion text (default -1 AKA no timeout)",
        " -k KEY      Key for obtaining the lock",
        " -l FILE     Optional location to write all the console output to",
        " -L          This is a Linux image not seL4",
        " -b FILE     Device tree blob (with -L)",
        " --bitstream FILE  FPGA bitstream",
        " -s TEXT     Specifies which machine this job is for",
        " -f FILE [+] Files to use as the job image",
        " -w TIME     Number of seconds to wait between each attempt to acquire the lock (default 8)",
        " -t RETRIES  Number of retries to perform for acquiring the lock (default -1)",
        "",
    ]


def systems_usage(prog: str) -> List[str]:
    return [f"{prog} systems [help|simple]", "",
            "   Print list of available systems. With simple just give their names", "",
            f"{prog} system-tsv and {prog} pool-tsv take no arguments, and write to stdout",
            "   all the systems, and all the pools (respectively).", ""]


def full_usage(prog: str) -> List[str]:
    """``mq.sh`` with no command: the commands, then each one's usage."""
    return [*usage(prog), "", *run_usage(prog), *sem_usage(prog), *systems_usage(prog)]
