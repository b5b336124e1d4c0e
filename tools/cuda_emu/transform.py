"""Rewrites a .cu file into C++ for the CUDA emulator (see build.sh):
kernel<<<grid, block, smem, stream>>>(args); becomes
emu::launch(dim3(grid), dim3(block), smem, [&] { kernel(args); }, "kernel");
Usage: python transform.py file.cu > file.cpp"""
import re
import sys

src = open(sys.argv[1]).read()
launch = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;()]*(?:<[^<>;()]*>[^<>;()]*)*>)?)\s*<<<(.*?)>>>\s*\((.*?)\);", re.S)


def split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def repl(m):
    kernel, cfg, args = m.group(1), split_top(m.group(2)), m.group(3)
    grid, block = cfg[0], cfg[1]
    smem = cfg[2] if len(cfg) > 2 else "0"
    return f'emu::launch(dim3({grid}), dim3({block}), {smem}, [&] {{ {kernel}({args}); }}, "{kernel}");'


sys.stdout.write(launch.sub(repl, src))
