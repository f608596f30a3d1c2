"""Old path of the detect package (the classifier was split into detect/*): an alias
until the last importers (daemon/loop.py) import sshguardd.detect."""

import sys

from sshguardd import detect

sys.modules[__name__] = detect
