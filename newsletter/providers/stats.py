"""What a provider says of one issue (``newsletter report``): its own counts for the issue's tag.

Every figure is optional: a provider gives what its API gives (docs/providers.md says which),
and None means "not given", never zero.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class IssueStats:
    processed: int | None = None  # messages the provider took with this tag
    delivered: int | None = None
    bounced: int | None = None
    complained: int | None = None
    unsubscribed: int | None = None
    opens: int | None = None  # every open, repeats included
    unique_opens: int | None = None
    machine_opens: int | None = None  # opens the provider knows were a machine's (Apple Mail Privacy Protection)
    clicks: int | None = None
    unique_clicks: int | None = None
    opens_by_day: tuple[tuple[str, int], ...] = ()  # (YYYY-MM-DD, unique opens)
    clicks_by_day: tuple[tuple[str, int], ...] = ()  # (YYYY-MM-DD, unique clicks)
    top_links: tuple[tuple[str, int], ...] = ()  # (URL, clicks), most clicked first, at most TOP_LINKS
    click_platforms: tuple[tuple[str, int], ...] = ()  # (platform, clicks), most first: Postmark's Desktop, Mobile...
    notes: tuple[str, ...] = ()  # what these figures mean or leave out, in the provider's terms

    def to_cache(self) -> str:
        """These figures as JSON, as the ledger keeps them (:meth:`from_cache` reads them back)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_cache(cls, text: str) -> IssueStats:
        """Figures kept by :meth:`to_cache`; a key this version does not know is left out."""
        kept = json.loads(text)
        values = {}
        for f in fields(cls):
            if f.name in kept:
                value = kept[f.name]
                values[f.name] = tuple(tuple(v) if isinstance(v, list) else v for v in value) \
                    if isinstance(value, list) else value
        return cls(**values)


TOP_LINKS = 10


def count(value: object) -> int | None:
    """A count from a provider's JSON: a non-negative whole number, else None (not given)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        return None
    return int(value)
