"""Privacy tools: PII scrubbing, differentially private fusion, membership-inference audit.

* :mod:`mmfuse.privacy.scrub` -- rule-based PII detection (e-mail, URL, phone, credit card,
  IBAN, IP address, US SSN), offline, applied by text encoders when ``scrub_pii`` is set.
* :mod:`mmfuse.privacy.dp` -- differentially private linear fusion (``epsilon=``), needs
  ``pip install "mmfuse[privacy]"``.
* :mod:`mmfuse.privacy.audit` -- loss-threshold and confidence membership attacks with a
  bootstrap CI on the attack AUC.

Importing this package imports nothing heavy.
"""

from .scrub import PII_KINDS, find_pii, scrub_text

__all__ = ["PII_KINDS", "find_pii", "scrub_text"]
