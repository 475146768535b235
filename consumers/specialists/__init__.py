"""The five specialists: their personas (system prompts) and their offline rulebook."""

from consumers.specialists.personas import SPECIALISTS, Persona, load_persona
from consumers.specialists.rulebook import OfflineAnswer, OfflineRulebook

__all__ = ["SPECIALISTS", "OfflineAnswer", "OfflineRulebook", "Persona", "load_persona"]
