"""A LoKr file replaced under the same name between two prompts (same size, modification time put
back) is loaded again by the nodes' WeightsCache, never served from the old file's lazy reader."""
from __future__ import annotations

import os
import shutil

from tests.support.comfy_pack import pack_module


def test_weights_cache_reloads_a_replaced_file(env):
    L = pack_module("nodes.planning")
    path = env["loras"] / "test.safetensors"
    cache = L.WeightsCache()
    first = cache.get(str(path))
    assert cache.get(str(path)) is first  # unchanged: cached
    st = os.stat(path)
    copy = env["loras"] / "copy.tmp"
    shutil.copyfile(path, copy)
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(copy, path)  # same bytes, size and mtime; another inode
    second = cache.get(str(path))
    assert second is not first
    name = second.module_names[0]
    assert second.modules[name] is not None  # reads fine from the new file
