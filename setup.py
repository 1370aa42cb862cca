import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class build_py(_build_py):
    """Also ship the top-level tutorial_data/ as databroker_lite/tutorial_data/."""

    def run(self):
        super().run()
        src = os.path.join(HERE, "tutorial_data")
        dest = os.path.join(self.build_lib, "databroker_lite", "tutorial_data")
        if self.dry_run or not os.path.isdir(src):
            return
        os.makedirs(dest, exist_ok=True)
        for name in sorted(os.listdir(src)):
            if os.path.isfile(os.path.join(src, name)):
                shutil.copy2(os.path.join(src, name), os.path.join(dest, name))


setup(cmdclass={"build_py": build_py})
