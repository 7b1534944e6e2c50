"""The one priority scale of kmodd: syslog's, which printk levels (`KERN_*`), kmod's log
functions, journald's PRIORITY= and kmodd's own records all share (0 most urgent, 7 debug)."""

from __future__ import annotations

from enum import IntEnum


class Priority(IntEnum):
    EMERG = 0
    ALERT = 1
    CRIT = 2  # kmod's tools print "FATAL" at this level and exit
    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7
