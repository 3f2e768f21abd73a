"""`binarysize`: byte counts as the charts show them, in KiB, MiB, GiB, TiB (1024-based).

Django's `filesizeformat` divides by 1024 too but says "MB", which disagrees with the
charts and with the kernel's figures; every page uses this filter instead.
"""

from django import template

register = template.Library()

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


@register.filter
def binarysize(value) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    index = 0
    while abs(number) >= 1024 and index < len(UNITS) - 1:
        number /= 1024
        index += 1
    return f"{int(number)} B" if index == 0 else f"{number:.1f} {UNITS[index]}"
