"""The offline provider: deterministic, no network. It builds honest content from the idea's own title,
description, bullets and links with templates, and says so; it never pretends a model wrote it."""

from __future__ import annotations

import re
import time
from typing import Any, TypeVar

from pydantic import BaseModel

from ...types import OutputFormat
from ..content import (
    BlogDraft,
    BlogSection,
    FormatDecision,
    ImageDraft,
    JudgeVerdict,
    PlanDraft,
    RepoDraft,
    RepoFile,
    ReviewVerdict,
    ThreadDraft,
)
from .base import Completion, IdeaBrief, ProviderError, Task

__all__ = ["OFFLINE_NOTE", "OFFLINE_REVIEW", "OfflineProvider"]

T = TypeVar("T", bound=BaseModel)
OFFLINE_NOTE = "Drafted offline from the idea's own notes by templates; no language model was used."
OFFLINE_REVIEW = ReviewVerdict(
    score=100,
    feedback=["Not reviewed: the offline templates cannot judge writing or code, and no model read this draft."],
)
"""The offline "review": it approves (score 100) so that it can never ask for a revision, and says it did not
review. The pipeline records no review score for it (`Execution.review_score` stays null)."""
_CODE_WORDS = re.compile(r"\b(cli|api|library|sdk|script|tool|app|bot|plugin|package|code|python|parser)\b", re.I)
_VISUAL_WORDS = re.compile(r"\b(image|poster|logo|visual|illustration|design|photo|picture|diagram)\b", re.I)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class OfflineProvider:
    """Deterministic templates. `latency` (seconds) simulates a model's wait, for tests and benchmarks."""

    name = "offline"

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        if self.latency:
            time.sleep(self.latency)
        builders: dict[Task, Any] = {
            "judge": self._judge,
            "choose_format": self._format,
            "blog_post": self._blog,
            "twitter_thread": self._thread,
            "github_repo": self._repo,
            "image": self._image,
            "plan": self._plan,
            "review": lambda _: OFFLINE_REVIEW,
        }
        if task == "plan" and schema is PlanDraft:  # the plan of the format the instructions are for
            value: Any = self._plan(idea, repository="repository" in instructions)
        else:
            value = builders[task](idea)
        if not isinstance(value, schema):
            raise ProviderError(f"offline provider builds {type(value).__name__} for {task}, not {schema.__name__}")
        return Completion(value, 0, 0, "offline-templates", provider="offline")

    @staticmethod
    def _judge(idea: IdeaBrief) -> JudgeVerdict:
        score = 30
        reasons = []
        if idea.description:
            score += min(25, len(idea.description) // 20)
            reasons.append("it has a description to build on")
        if idea.bullets:
            score += min(30, 6 * len(idea.bullets))
            reasons.append(f"{len(idea.bullets)} concrete point(s)")
        if idea.external_links:
            score += min(15, 5 * len(idea.external_links))
            reasons.append(f"{len(idea.external_links)} reference link(s)")
        score = min(score, 100)
        detail = ", ".join(reasons) if reasons else "only a title so far"
        return JudgeVerdict(score=score, reasoning=f"Scored {score}/100 from how developed the notes are: {detail}.")

    @staticmethod
    def _format(idea: IdeaBrief) -> FormatDecision:
        text = " ".join([idea.title, idea.description or "", *idea.bullets])
        if _CODE_WORDS.search(text):
            return FormatDecision(format=OutputFormat.GITHUB_REPO, reasoning="The idea describes software to build.")
        if _VISUAL_WORDS.search(text):
            return FormatDecision(format=OutputFormat.IMAGE, reasoning="The idea is visual.")
        if not idea.description and len(idea.bullets) <= 3:
            return FormatDecision(
                format=OutputFormat.TWITTER_THREAD, reasoning="A short idea reads best as a few posts."
            )
        return FormatDecision(format=OutputFormat.BLOG_POST, reasoning="The idea has enough substance for an article.")

    @staticmethod
    def _plan(idea: IdeaBrief, *, repository: bool = False) -> PlanDraft:
        if repository:
            return PlanDraft(
                approach=_clip(f"A small command-line Python program for: {idea.title}. {OFFLINE_NOTE}", 600),
                outline=[
                    "README.md: what it does, the planned features from the notes, how to run it",
                    "main.py: an argparse entry point that prints the plan",
                    "requirements.txt: standard library only",
                ],
            )
        outline = ["The idea: " + _clip(idea.description or idea.title, 280)]
        if idea.bullets:
            outline.append("Key points: " + _clip("; ".join(idea.bullets), 280))
        if idea.external_links:
            outline.append("Further reading: the idea's links")
        outline.append("Next steps: the smallest useful version")
        return PlanDraft(
            approach=_clip(f"An article drawn from the notes on {idea.title}. {OFFLINE_NOTE}", 600), outline=outline
        )

    @staticmethod
    def _blog(idea: IdeaBrief) -> BlogDraft:
        sections = [
            BlogSection(heading="The idea", paragraphs=[idea.description or idea.title]),
        ]
        if idea.bullets:
            sections.append(BlogSection(heading="Key points", paragraphs=[f"**{b}**" for b in idea.bullets[:12]]))
        if idea.external_links:
            sections.append(
                BlogSection(heading="Further reading", paragraphs=[f"<{link}>" for link in idea.external_links[:12]])
            )
        sections.append(
            BlogSection(
                heading="Next steps",
                paragraphs=[
                    f"Turn “{_clip(idea.title, 80)}” into something real: pick the smallest useful version "
                    "and ship it.",
                    OFFLINE_NOTE,
                ],
            )
        )
        words = re.findall(r"[a-z0-9]+", idea.title.lower())
        return BlogDraft(
            title=_clip(idea.title, 200),
            sections=sections,
            tags=list(dict.fromkeys(w for w in words if 3 < len(w) <= 40))[:5],  # BlogDraft: tags of 1-40
            meta_description=_clip(idea.description or idea.title, 160),
            social_post=_clip(f"New post: {idea.title}", 280),
        )

    @staticmethod
    def _thread(idea: IdeaBrief) -> ThreadDraft:
        posts = [_clip(f"{idea.title} — a thread.", 270)]
        if idea.description:
            posts.append(_clip(idea.description, 270))
        posts.extend(_clip(b, 270) for b in idea.bullets[:6])
        posts.extend(_clip(f"Read more: {link}", 270) for link in idea.external_links[:2])
        posts.append(_clip("That's the idea. (Drafted offline from my notes, no AI model involved.)", 270))
        while len(posts) < 3:
            posts.insert(-1, _clip(f"Why it matters: {idea.title}", 270))
        return ThreadDraft(posts=posts[:10])

    @staticmethod
    def _repo(idea: IdeaBrief) -> RepoDraft:
        features = "\n".join(f"- {b}" for b in idea.bullets) or "- (add features here)"
        links = "\n".join(f"- <{link}>" for link in idea.external_links)
        readme = (
            f"# {idea.title}\n\n{idea.description or ''}\n\n## Planned features\n\n{features}\n\n"
            + (f"## References\n\n{links}\n\n" if links else "")
            + "## Run\n\n```bash\npython main.py --help\n```\n\n"
            + f"_{OFFLINE_NOTE}_\n"
        )
        steps = ",\n".join(f"    {b!r}" for b in idea.bullets) or "    'Describe the first step'"
        main = (
            '"""' + _clip(idea.title, 100).replace('"', "'") + '"""\n\n'
            "import argparse\n\n"
            f"PLAN = [\n{steps},\n]\n\n\n"
            "def main() -> None:\n"
            f"    parser = argparse.ArgumentParser(description={_clip(idea.title, 100)!r})\n"
            "    parser.add_argument('--plan', action='store_true', help='print the plan')\n"
            "    args = parser.parse_args()\n"
            "    if args.plan:\n"
            "        for number, step in enumerate(PLAN, 1):\n"
            "            print(f'{number}. {step}')\n"
            "    else:\n"
            "        parser.print_help()\n\n\n"
            "if __name__ == '__main__':\n"
            "    main()\n"
        )
        return RepoDraft(
            repo_name=idea.title,
            description=_clip(idea.description or idea.title, 350),
            files=[
                RepoFile(path="README.md", content=readme),
                RepoFile(path="main.py", content=main),
                RepoFile(path="requirements.txt", content="# standard library only\n"),
            ],
            topics=["idea-expansion", "python"],
            run_instructions="python main.py --plan",
        )

    @staticmethod
    def _image(idea: IdeaBrief) -> ImageDraft:
        return ImageDraft(
            prompt=f"A clean title card for: {_clip(idea.title, 200)}",
            caption=_clip(idea.description or idea.title, 300),
            headline=_clip(idea.title, 120),
        )
