"""Reading user-named files without hanging or exhausting memory.

A FIFO, a terminal or a device such as /dev/zero named where a file is expected would block
``open()`` or never end; such paths are refused before any byte is read. The file is opened
with O_NONBLOCK (opening a FIFO then returns at once), checked with fstat, and read up to a
size limit.
"""
import os
import stat


class NotARegularFile(ValueError):
    """The path names something other than a regular file, or a file over the size limit."""


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _open_checked(path):
    """(fd, its fstat) of the regular file at path: the check is made on the opened file, so
    nothing can be swapped in between; NotARegularFile for anything else."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
            raise NotARegularFile(f"{path}: {kind}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def open_regular_file(path):
    """A binary file object reading the regular file at path (streamed, for large data files);
    NotARegularFile for anything else; OSError when it cannot be opened."""
    fd, _ = _open_checked(path)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular_file(path, max_bytes):
    """The bytes of the regular file at path; NotARegularFile for anything else or a file
    larger than max_bytes; OSError when it cannot be opened."""
    fd, info = _open_checked(path)
    try:
        if info.st_size > max_bytes:
            raise NotARegularFile(f"{path}: {info.st_size} bytes, more than the {max_bytes} this file may have")
        chunks, left = [], max_bytes + 1  # a file growing while read is cut at the limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise NotARegularFile(f"{path}: more than the {max_bytes} bytes this file may have")
        return data
    finally:
        os.close(fd)
