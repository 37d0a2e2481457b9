"""
The C{twistd preforked} plugin.
"""

from twisted.application.service import ServiceMaker

preforked = ServiceMaker(
    "preforktwist",
    "preforktwist.tap",
    "A pre-forking server: a pool of Twisted worker processes on one socket.",
    "preforked",
)
