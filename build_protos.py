"""Hatch build hook: compile the gRPC contracts in src/weathertweets/proto at build time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def compile_protos(root: Path) -> list[Path]:
    from grpc_tools import protoc  # a build requirement, see pyproject.toml

    src = root / "src"
    include = Path(protoc.__file__).parent / "_proto"
    protos = sorted((src / "weathertweets" / "proto").glob("*.proto"))
    for proto in protos:
        args = [
            "grpc_tools.protoc",
            f"-I{src}",
            f"-I{include}",
            f"--python_out={src}",
            f"--pyi_out={src}",
            f"--grpc_python_out={src}",
            str(proto.relative_to(src)),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
    return protos


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name in ("wheel", "editable"):
            compile_protos(Path(self.root))


if __name__ == "__main__":
    for path in compile_protos(Path(__file__).parent):
        print(f"compiled {path}")
