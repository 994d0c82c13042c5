"""Sphinx configuration of the API reference (``make docs``).

The pages document the public namespaces through their ``__all__`` (``automodule`` with
``:members:``), never the private files behind them, so moving a function from one file
to another inside a package changes no page. The build is offline (no intersphinx) and
runs with ``-W -n``: a broken reference to the library's own objects fails it.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # this checkout's wsss_blocks, installed or not

from sphinx.errors import PycodeError  # noqa: E402
from sphinx.pycode import ModuleAnalyzer  # noqa: E402

import wsss_blocks  # noqa: E402

project = "wsss-blocks"
author = "wsss-blocks contributors"
copyright = "wsss-blocks contributors"
release = version = wsss_blocks.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []

# The namespaces documented: the ``.. automodule::`` of each page (index.rst lists the
# pages). The top level re-exports names of its subpackages; those are documented once,
# in the subpackage, and the top-level page links to them (_complete_page below).
NAMESPACES = sorted(
    found.group(1)
    for page in HERE.glob("*.rst")
    if (found := re.search(r"^\.\. automodule:: (\S+)$", page.read_text(), re.M))
)

autodoc_default_options = {
    "members": True,
    "undoc-members": True,  # every name of __all__, constants without a docstring too
    "show-inheritance": True,
}
autodoc_member_order = "bysource"  # with __all__: the order of __all__
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autoclass_content = "class"  # Args in the class docstring (Google style); not nn.Module's
autodoc_inherit_docstrings = False  # torch.nn.Module.forward's text is not ours

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False  # "Returns: shape, dtype: meaning" is prose, not a type to link
napoleon_use_ivar = True
napoleon_custom_sections = ["Reference"]  # the paper and equation a block implements

# Nitpicky: every reference to the library's own objects must resolve. Types of other
# libraries (torch, numpy, the standard library...) have no page to link to offline.
nitpicky = True
_EXTERNAL = (
    r"(torch|torchvision|numpy|np|timm|PIL|matplotlib|cv2|sklearn|skimage|yaml|tqdm"
    r"|pycocotools|collections|collections\.abc|typing|pathlib|os|io|signal|threading"
    r"|contextlib|dataclasses|enum|types|abc|random|multiprocessing|argparse|logging"
    r"|functools|itertools|datetime|json)(\..*)?"
)
nitpick_ignore_regex = [
    ("py:.*", _EXTERNAL),
    # Sphinx renders some annotations by their bare name (typing's forward references).
    ("py:class", r"(Tensor|Module|Path|Sequence|Mapping|Iterable|Iterator|Callable)"),
]


def _is_documented_by_automodule(obj) -> bool:
    return inspect.isclass(obj) or inspect.isroutine(obj)


def _public_homes() -> tuple[dict[tuple[int, str], str], set[str]]:
    """(id(object), name) -> the documented name of that object (its subpackage first,
    the top level for what only the top level exports), and the top-level names of
    classes and functions that a subpackage documents."""
    homes: dict[tuple[int, str], str] = {}
    for name in sorted(NAMESPACES, key=lambda name: name == "wsss_blocks"):  # top level last
        module = importlib.import_module(name)
        for member in getattr(module, "__all__", ()):
            homes.setdefault((id(getattr(module, member)), member), f"{name}.{member}")
    linked = {
        member
        for member, obj in ((m, getattr(wsss_blocks, m)) for m in wsss_blocks.__all__)
        if _is_documented_by_automodule(obj)
        and homes[(id(obj), member)] != f"wsss_blocks.{member}"
    }
    return homes, linked


_HOMES, _TOP_LINKED = _public_homes()


def _attribute_doc(app, what, name, obj, options, lines):
    """A constant that a namespace re-exports keeps the docstring it has where it is
    defined (autodoc reads attribute docstrings only in the module it documents)."""
    if what != "data":
        return
    own = "\n".join(lines).strip()
    if own and own != inspect.cleandoc(type(obj).__doc__ or ""):
        return  # its own docstring, not its type's (a dict's: "dict() -> new empty...")
    lines[:] = []
    namespace, _, attr = name.rpartition(".")
    prefix = namespace + "."
    for module_name, module in sorted(sys.modules.items()):
        if module_name != namespace and not module_name.startswith(prefix):
            continue
        if getattr(module, attr, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
        except PycodeError:
            continue
        if ("", attr) in docs:
            lines[:] = list(docs[("", attr)])
            return


def _constants(namespace: str) -> list[str]:
    """The names of ``__all__`` that are neither classes nor functions and that the
    namespace's own file gives no docstring: ``automodule`` leaves them out (it documents
    a re-exported constant only where its docstring is), so the page adds them."""
    module = importlib.import_module(namespace)
    own_docs = ModuleAnalyzer.for_module(namespace).find_attr_docs()
    return [
        member
        for member in getattr(module, "__all__", ())
        if not _is_documented_by_automodule(getattr(module, member))
        and ("", member) not in own_docs
    ]


def _complete_page(app, docname, source):
    """Complete each namespace page from its ``__all__``, so that no page names a name:

    - the constants that ``automodule`` leaves out, as ``autodata`` entries;
    - on the top-level page, the classes and functions that a subpackage documents are
      left out and linked to instead, so each object is documented once (under its
      subpackage's name) and each top-level name is on the page or linked from it.
    """
    found = re.search(r"^\.\. automodule:: (\S+)$", source[0], flags=re.MULTILINE)
    if found is None:
        return
    namespace = found.group(1)
    text, lines = source[0], []
    if namespace == "wsss_blocks":
        names = [member for member in wsss_blocks.__all__ if member in _TOP_LINKED]
        text = text.replace(
            "   :members:\n", f"   :members:\n   :exclude-members: {', '.join(names)}\n", 1
        )
    constants = _constants(namespace)
    if constants:
        lines += ["", "Constants", "---------", ""]
        for member in constants:
            lines += [f".. autodata:: {namespace}.{member}", ""]
    if namespace == "wsss_blocks":
        lines += ["", "Re-exported from the subpackages", "--------------------------------", ""]
        for member in names:
            obj = getattr(wsss_blocks, member)
            role = "class" if inspect.isclass(obj) else "func"
            lines.append(f"- :{role}:`{_HOMES[(id(obj), member)]}`")
    source[0] = text + "\n".join(lines) + "\n"


def _resolve_by_identity(app, env, node, contnode):
    """A reference to one of the library's objects by its private path (an annotation:
    ``wsss_blocks.models.cosa.CoSAOutput``; ``wsss_blocks.metrics.MeanIoU.compute``) or
    by a re-export (``wsss_blocks.CoSANet``) resolves to the page where that object is
    documented, found by identity: moving the object between files changes nothing."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("wsss_blocks."):
        return None
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):  # the longest importable module first
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for index in range(split, len(parts)):
            obj = getattr(obj, parts[index], None)
            home = _HOMES.get((id(obj), parts[index]))
            if home is not None:
                new_target = ".".join([home, *parts[index + 1:]])
                if new_target == target:
                    return None
                return env.get_domain("py").resolve_xref(
                    env, node.get("refdoc"), app.builder, node.get("reftype"), new_target,
                    node, contnode,
                )
        return None
    return None


def setup(app):
    app.connect("source-read", _complete_page)
    app.connect("autodoc-process-docstring", _attribute_doc)
    app.connect("missing-reference", _resolve_by_identity)
