"""Serving: request parsing, the micro-batcher, the Flask app with its page (page.html) and the WSGI server.
The step CLI is steps/serve.py; the model it serves comes from steps.inference."""
