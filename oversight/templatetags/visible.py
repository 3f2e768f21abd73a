"""`visible`: text an agent wrote, with the characters a person cannot see for what they
are (a right-to-left override, a zero-width space) shown as `\\uXXXX` escapes."""

from django import template

from oversight.jsontext import visible as _visible

register = template.Library()


@register.filter
def visible(value) -> str:
    return _visible(str(value))
