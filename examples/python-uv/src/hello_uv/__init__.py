"""strata's uv recipe."""
import getpass
import os
import platform

import six


def main() -> None:
    print(
        f"hello from uv: Python {platform.python_version()}, six {six.__version__}, "
        f"running as {getpass.getuser()}, HOME={os.environ.get('HOME')}"
    )
