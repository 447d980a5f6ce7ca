"""What each model call is told: the task's instructions (with their rubric), and what later calls carry of
earlier ones (the plan into the draft, the draft into the review, the review's feedback into the revision).

Everything carried is clipped to a fixed number of characters, so every prompt has a ceiling whatever a model
answered before: `instructions_ceiling(task)` (used by `budget.worst_case_tokens_per_credit`).
"""

from __future__ import annotations

from ..types import OutputFormat
from .content import BlogDraft, PlanDraft, RepoDraft, ReviewVerdict
from .providers.base import Task

__all__ = [
    "CHOOSE_FORMAT_WITHOUT_IMAGES",
    "FEEDBACK_CHARS",
    "INSTRUCTIONS",
    "PLANNED_FORMATS",
    "PLAN_CHARS",
    "PLAN_INSTRUCTIONS",
    "REVIEW_DRAFT_CHARS",
    "REVIEW_RUBRICS",
    "draft_instructions",
    "draft_text",
    "instructions_ceiling",
    "plan_instructions",
    "review_instructions",
]

PLAN_CHARS = 4_000
"""The most of a plan a draft's instructions carry."""
REVIEW_DRAFT_CHARS = 16_000
"""The most of a draft a review reads (a long repository is reviewed from its start: README and main files)."""
FEEDBACK_CHARS = 3_000
"""The most of a review's feedback a revision carries."""
PLANNED_FORMATS = (OutputFormat.BLOG_POST, OutputFormat.GITHUB_REPO)
"""The formats that are planned and reviewed (as the original app's blog and code creators were)."""

INSTRUCTIONS: dict[Task, str] = {
    "judge": (
        "Score how promising and ready to expand this idea is, 0-100, and say why in two sentences.\n"
        "Rubric: 0-30 a bare title with nothing to build on; 31-60 a clear topic but few specifics; 61-85 a "
        "problem, an audience and concrete points; 86-100 all of that plus references or a first step. "
        "Judge only what is written; do not reward length for its own sake."
    ),
    "choose_format": (
        "Choose the format that suits the idea best: blog_post (an argument or explanation with substance), "
        "twitter_thread (a short, punchy idea with a few points), github_repo (software to build: a tool, "
        "script, library or app) or image (something visual: a poster, logo, illustration). Say why in one "
        "or two sentences."
    ),
    "blog_post": (
        "Write a clear blog post of 600-1200 words in 3-7 sections, each with a heading and paragraphs. "
        "Open with the problem and who has it, explain the idea with concrete examples taken from the notes, "
        "cover trade-offs or limits honestly, and end with a concrete next step. Plain, direct language; no "
        "filler, no invented facts, statistics, quotes or links. Give 2-5 lower-case topic tags, a meta "
        "description of at most 160 characters and a social post of at most 280 characters."
    ),
    "twitter_thread": (
        "Write a thread of 3-10 posts, each at most 270 characters, without numbering them. The first post "
        "hooks with the core idea; each later post makes one concrete point from the notes; the last says "
        "what to do next. No hashtags walls, no invented facts."
    ),
    "github_repo": (
        "Design a small, runnable Python repository (standard library where possible): README.md (what it "
        "does, install, usage with an example, limits), main.py with a command-line entry point and "
        "docstrings, requirements.txt (pinned lower bounds, or a comment when there are none) and, where it "
        "helps, a test file runnable with pytest. Code must be complete (no TODO stubs or placeholders), "
        "handle bad input with clear errors, and never embed secrets. Give a lower-case hyphenated name, a "
        "one-line description, GitHub topics and the exact command that runs it."
    ),
    "image": "Describe one image that captures the idea: a text-to-image prompt, a caption and a short headline.",
    "plan": "Plan the piece before it is written.",
    "review": "Review the draft below against the rubric.",
}
"""The instructions of each task (the plan and review ones are completed per format below)."""

PLAN_INSTRUCTIONS: dict[OutputFormat, str] = {
    OutputFormat.BLOG_POST: (
        "Plan a blog post about this idea before it is written. approach: the angle, the reader it is for and "
        "the tone, in two or three sentences. outline: 3-7 sections in order, each 'Heading: what the section "
        "says and which of the notes it uses'. The last section is a concrete next step."
    ),
    OutputFormat.GITHUB_REPO: (
        "Plan a small runnable Python repository for this idea before it is written. approach: what the "
        "program does, its kind (command-line tool, library or script), its design and its main risk, in two "
        "or three sentences. outline: every file in order of importance, each 'path: its role and what it "
        "contains' (README.md, main.py and requirements.txt at least; a test file where it helps)."
    ),
}

REVIEW_RUBRICS: dict[OutputFormat, str] = {
    OutputFormat.BLOG_POST: (
        "Review this blog post draft as a demanding editor. Score it 0-100 as the sum of: clarity (0-25: one "
        "idea per section, plain sentences), accuracy (0-25: only what the idea's notes support, no invented "
        "facts, numbers or links), structure (0-25: follows the plan, a problem-first opening, a concrete "
        "closing step, meta description and social post within their limits) and engagement (0-25: concrete "
        "examples, no filler). feedback: up to 8 concrete changes that would raise the score, most important "
        "first, each naming the section it concerns. Do not rewrite the post."
    ),
    OutputFormat.GITHUB_REPO: (
        "Review this repository draft as a strict senior engineer. Score it 0-100 as the sum of: correctness "
        "(0-30: it runs as the run instructions say; no syntax errors, missing imports or stubs), completeness "
        "(0-20: every file of the plan, README usage matches the code), security (0-20: no secrets, no shell "
        "injection or unsafe eval, input validated), code quality (0-15: clear names, small functions, "
        "docstrings) and documentation (0-15: install, usage, limits). feedback: up to 8 concrete fixes, most "
        "important first, each naming the file it concerns. Do not rewrite the code."
    ),
}

CHOOSE_FORMAT_WITHOUT_IMAGES = (
    "Choose the format that suits the idea best: blog_post (an argument or explanation with substance), "
    "twitter_thread (a short, punchy idea with a few points) or github_repo (software to build). Images are "
    "not available here. Say why in one or two sentences."
)
"""The format choice where images cannot be made or stored (never longer than the full instructions)."""

_PLAN_HEADER = "\n\nFollow this plan:\n"
_FEEDBACK_HEADER = "\n\nThis is a revision: a reviewer scored the previous draft {score}/100 and asked for:\n"
_DRAFT_HEADER = "\n\nThe draft:\n"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plan_instructions(fmt: OutputFormat) -> str:
    """The instructions of a plan call for `fmt` (a blog post or a repository)."""
    return PLAN_INSTRUCTIONS[fmt]


def plan_text(plan: PlanDraft) -> str:
    return plan.approach + "\n" + "\n".join(f"- {line}" for line in plan.outline)


def draft_instructions(fmt: OutputFormat, plan: PlanDraft | None = None, review: ReviewVerdict | None = None) -> str:
    """A draft's instructions: its task's, the plan (clipped to PLAN_CHARS) and, for the one revision, the
    review's score and feedback (clipped to FEEDBACK_CHARS)."""
    text = INSTRUCTIONS[fmt.value]
    if plan is not None:
        text += _PLAN_HEADER + _clip(plan_text(plan), PLAN_CHARS)
    if review is not None:
        feedback = "\n".join(f"- {item}" for item in review.feedback) or "- (no specific feedback)"
        text += _FEEDBACK_HEADER.format(score=review.score) + _clip(feedback, FEEDBACK_CHARS)
    return text


def draft_text(draft: BlogDraft | RepoDraft) -> str:
    """A draft as a reviewer reads it."""
    if isinstance(draft, BlogDraft):
        body = "\n\n".join(f"## {s.heading}\n\n" + "\n\n".join(s.paragraphs) for s in draft.sections)
        return (
            f"# {draft.title}\n\n{body}\n\nTags: {', '.join(draft.tags)}\nMeta description: "
            f"{draft.meta_description}\nSocial post: {draft.social_post}"
        )
    files = "\n\n".join(f"--- {f.path} ---\n{f.content}" for f in draft.files)
    return f"Repository: {draft.repo_name}\n{draft.description}\nRun: {draft.run_instructions}\n\n{files}"


def review_instructions(fmt: OutputFormat, draft: BlogDraft | RepoDraft) -> str:
    """A review's instructions: the format's rubric and the draft, clipped to REVIEW_DRAFT_CHARS."""
    return REVIEW_RUBRICS[fmt] + _DRAFT_HEADER + _clip(draft_text(draft), REVIEW_DRAFT_CHARS)


def instructions_ceiling(task: Task) -> int:
    """The most characters the instructions of one `task` call can hold, whatever came before it."""
    if task == "plan":
        return max(len(text) for text in PLAN_INSTRUCTIONS.values())
    if task == "review":
        return max(len(text) for text in REVIEW_RUBRICS.values()) + len(_DRAFT_HEADER) + REVIEW_DRAFT_CHARS
    if task in ("blog_post", "github_repo"):
        feedback_header = len(_FEEDBACK_HEADER.format(score=100))
        return len(INSTRUCTIONS[task]) + len(_PLAN_HEADER) + PLAN_CHARS + feedback_header + FEEDBACK_CHARS
    return len(INSTRUCTIONS[task])
