"""Parsing of config-file arguments: `--config=file.py:name=value,name=value`."""


def parse(arg: str, allowed: dict) -> dict:
  """{name: value} of "a=1,b=x", each value converted by allowed[name] (int or a tuple of choices).

  Raises:
    ValueError: one line naming the bad item and the valid spellings.
  """
  usage = ",".join(f"{name}=<{'|'.join(kind) if isinstance(kind, tuple) else 'int'}>"
                   for name, kind in allowed.items())
  out = {}
  for item in filter(None, arg.split(",")):
    name, _, value = item.partition("=")
    kind = allowed.get(name)
    if kind is int and value.isdigit():
      out[name] = int(value)
    elif isinstance(kind, tuple) and value in kind:
      out[name] = value
    else:
      raise ValueError(f"bad config argument {item!r}; use {usage}.")
  return out
