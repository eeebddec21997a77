"""LTI 1.3 Advantage tool: registration, OIDC login and launch, deep linking, the learner's
recording page and its upload route (issue 13). No JWT code is written here: joserfc does the JOSE
work. The AGS grade passback runs on the delivery workers (`workers/lti_passback.py`)."""
