import getpass
import os
import platform

import six

print(
    f"hello from onbuild: Python {platform.python_version()}, six {six.__version__}, "
    f"running as {getpass.getuser()}, HOME={os.environ.get('HOME')}"
)
