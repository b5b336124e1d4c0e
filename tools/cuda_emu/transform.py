"""Rewrites a .cu file into C++ for the CUDA emulator (see build.sh):
  kernel<A, B><<<grid, block, smem, stream>>>(args);  becomes
  emu::launch(dim3(grid), dim3(block), smem, [&] { kernel<A, B>(args); }, emu::kernel_name("kernel", {A, B}));
  __shared__ [__align__(A)] T name[N][M];  becomes
  static const char emu_tag_name = 0; auto& name = emu::shared<T[N][M][, A]>(&emu_tag_name, "name");
(the block's shared memory then lives in the emulator's watched buffer). Any other form of
__shared__ is left as is and fails to compile, so nothing escapes the checker.
Usage: python transform.py file.cu > file.cpp"""
import re
import sys

launch = re.compile(r"([A-Za-z_][\w:]*)(<[^<>;()]*(?:<[^<>;()]*>[^<>;()]*)*>)?\s*<<<(.*?)>>>\s*\((.*?)\);", re.S)
shared = re.compile(r"__shared__\s+(?:__align__\((\d+)\)\s+)?([A-Za-z_][\w:]*)\s+([A-Za-z_]\w*)((?:\s*\[[^\]]+\])+)\s*;")


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


def repl_launch(m):
    name, targs, cfg, args = m.group(1), m.group(2) or "", split_top(m.group(3)), m.group(4)
    grid, block = cfg[0], cfg[1]
    smem = cfg[2] if len(cfg) > 2 else "0"
    values = ", ".join(f"(long long)({a})" for a in split_top(targs[1:-1])) if targs else ""
    return (f"emu::launch(dim3({grid}), dim3({block}), {smem}, [&] {{ {name}{targs}({args}); }}, "
            f'emu::kernel_name("{name}", {{{values}}}));')


def repl_shared(m):
    align, type_, name, dims = m.group(1), m.group(2), m.group(3), re.sub(r"\s+", "", m.group(4))
    return (f"static const char emu_tag_{name} = 0; "
            f'auto& {name} = emu::shared<{type_}{dims}{", " + align if align else ""}>(&emu_tag_{name}, "{name}");')


def transform(src):
    return shared.sub(repl_shared, launch.sub(repl_launch, src))


if __name__ == "__main__":
    sys.stdout.write(transform(open(sys.argv[1]).read()))
