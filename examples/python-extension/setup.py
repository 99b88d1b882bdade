from setuptools import Extension, setup

setup(ext_modules=[Extension("fastsum", ["src/fastsum.c"])])
