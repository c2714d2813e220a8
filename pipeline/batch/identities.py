"""Names across episodes: the characters of a show's episodes matched by face into show-level identities.

Each timeline carries one face embedding per character (the weighted unit mean of its tracks' dlib
descriptors, ``characters[].embedding``). Characters of different episodes are clustered with the same
average-linkage agglomeration the visual stage uses within an episode
(:func:`extractors.identity.cluster_distances`), at the embedder's own same-person distance
(``DlibFaceEmbedder.distance_threshold``), with a cannot-link between any two characters of one episode
(an episode already split them). A cast file, given to the episode runs, names characters: two characters
with the same cast name are one person (distance 0), two different names are two (cannot-link). A
character whose face never reached the size the identity stage trusts (``ChipGate.min_face_pixels``), or
that appears in one episode only, stays episode-local. The episode timelines are never rewritten.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass
class CharacterRef:
    """What identity matching needs of one character of one episode."""

    episode: str
    character: str
    name: str | None
    embedding: np.ndarray | None      # [D] unit vector, or None when the timeline has none
    reliable: bool                    # a face large enough for a trustworthy descriptor
    screen_time: float = 0.0
    speaking_time: float = 0.0


@dataclass
class Identity:
    id: str
    name: str | None
    members: list[CharacterRef]
    distances: list[float]            # each member's distance to the identity's mean embedding

    def to_dict(self) -> dict:
        return {
            "id": self.id, "name": self.name, "episodes": len(self.members),
            "screen_time": round(sum(m.screen_time for m in self.members), 3),
            "speaking_time": round(sum(m.speaking_time for m in self.members), 3),
            "members": [{"episode": m.episode, "character": m.character, "name": m.name,
                         "distance": round(d, 4)} for m, d in zip(self.members, self.distances, strict=True)],
        }


@dataclass
class ShowIdentities:
    show: str
    embedder: str | None
    threshold: float | None
    episodes: list[str]
    identities: list[Identity] = field(default_factory=list)
    local: list[tuple[CharacterRef, str]] = field(default_factory=list)    # (character, why it stays local)

    def identity_of(self, episode: str, character: str) -> str | None:
        for identity in self.identities:
            if any(m.episode == episode and m.character == character for m in identity.members):
                return identity.id
        return None

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "show": self.show, "embedder": self.embedder, "threshold": self.threshold,
            "episodes": self.episodes,
            "identities": [identity.to_dict() for identity in self.identities],
            "episode_local": [{"episode": c.episode, "character": c.character, "name": c.name, "reason": why,
                               "screen_time": c.screen_time, "speaking_time": c.speaking_time}
                              for c, why in self.local],
        }


def same_person_threshold(embedder: str | None) -> float:
    """The embedder's calibrated same-person L2 distance on unit vectors (extractors.identity)."""
    from extractors.identity import DlibFaceEmbedder, FacenetFaceEmbedder

    by_name = {DlibFaceEmbedder.name: DlibFaceEmbedder.distance_threshold,
               FacenetFaceEmbedder.name: FacenetFaceEmbedder.distance_threshold}
    if embedder not in by_name:
        log.warning("unknown face embedder %r: using dlib's threshold %.2f", embedder,
                    DlibFaceEmbedder.distance_threshold)
    return float(by_name.get(embedder, DlibFaceEmbedder.distance_threshold))


def match_identities(show: str, characters: list[CharacterRef], embedder: str | None,
                     threshold: float | None = None) -> ShowIdentities:
    """Show-level identities ``P0, P1, ...`` (most screen time first) of characters seen in two or more episodes."""
    from extractors.identity import cluster_distances

    threshold = same_person_threshold(embedder) if threshold is None else threshold
    episodes = list(dict.fromkeys(c.episode for c in characters))
    result = ShowIdentities(show, embedder, threshold, episodes)
    usable = []
    for character in characters:
        if character.embedding is None:
            result.local.append((character, "no face embedding"))
        elif not character.reliable:
            result.local.append((character, "no face large enough for a reliable descriptor"))
        else:
            usable.append(character)
    distance, cannot_link = _constraints(usable)
    clusters = cluster_distances(distance, threshold, cannot_link) if usable else []
    found = []
    for cluster in clusters:
        members = [usable[i] for i in cluster]
        if len(members) < 2:
            result.local.append((members[0], "seen in one episode"))
            continue
        found.append(members)
    found.sort(key=lambda ms: (-sum(m.screen_time for m in ms), episodes.index(ms[0].episode), ms[0].character))
    for k, members in enumerate(found):
        members.sort(key=lambda m: (episodes.index(m.episode), m.character))
        mean = _unit(np.mean([m.embedding for m in members], axis=0))
        distances = [float(np.linalg.norm(m.embedding - mean)) for m in members]
        result.identities.append(Identity(f"P{k}", _name(members), members, distances))
    result.local.sort(key=lambda item: (episodes.index(item[0].episode), item[0].character))
    return result


def _constraints(characters: list[CharacterRef]) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """[N, N] L2 distances between unit embeddings, with the episode and cast constraints applied."""
    n = len(characters)
    if n == 0:
        return np.zeros((0, 0)), set()
    x = np.stack([_unit(c.embedding) for c in characters])
    distance = np.sqrt(np.clip(2.0 - 2.0 * (x @ x.T), 0.0, None)).astype(np.float64)
    cannot_link = set()
    for i in range(n):
        for j in range(i + 1, n):
            a, b = characters[i], characters[j]
            if a.episode == b.episode or (a.name and b.name and a.name != b.name):
                cannot_link.add((i, j))
            elif a.name and a.name == b.name:
                distance[i, j] = distance[j, i] = 0.0
    return distance, cannot_link


def _name(members: list[CharacterRef]) -> str | None:
    names = Counter(m.name for m in members if m.name)
    return names.most_common(1)[0][0] if names else None


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    return x / max(float(np.linalg.norm(x)), 1e-12)
