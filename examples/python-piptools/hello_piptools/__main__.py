import getpass
import os
import platform

import six

print(
    f"hello from pip-tools: Python {platform.python_version()}, six {six.__version__}, "
    f"running as {getpass.getuser()}, HOME={os.environ.get('HOME')}"
)
