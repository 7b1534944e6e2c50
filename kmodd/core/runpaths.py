"""Files kmodd keeps under /run for other programs to read (paths under the root).

Here, apart from the code that writes them, so that the daemon can see whether one is left
from an earlier instance without importing that code before it is ready.
"""

from __future__ import annotations

#: The modprobe.d file kmodd writes for its autoload deny list (kmod's modprobe reads it).
POLICY_FILE = "/run/modprobe.d/kmodd-autoload-policy.conf"
#: The flag systemd-modules-load.service's drop-in checks: kmodd loads the static lists.
TAKEOVER_FLAG = "/run/kmodd/modules-load"
