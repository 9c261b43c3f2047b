"""A `python -c` preamble under which any `import torch` fails: proves a path is torch-free."""

NO_TORCH = (
    "import sys\n"
    "class NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ImportError('torch is not installed here')\n"
    "sys.meta_path.insert(0, NoTorch())\n"
)
