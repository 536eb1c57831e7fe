"""A command run on a real terminal (a pseudo-terminal of a set size), for what a user sees on one."""

import contextlib
import fcntl
import os
import pty
import struct
import subprocess
import termios


def on_terminal(argv: list[str], rows: int = 24, cols: int = 120, timeout: float = 120) -> tuple[int, str]:
    """(exit code, everything the command wrote to its terminal)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    with contextlib.suppress(OSError):  # raised when the terminal closes: the command has ended
        while chunk := os.read(leader, 4096):
            chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")
