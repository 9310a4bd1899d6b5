"""`healer demo`: the story (healer/demo/story.py) and the sample app it deploys
(healer/demo/sampleapp.py, run as `python -m healer.demo.sampleapp`).

Nothing is imported here: the sample app runs as its own process, and importing the story
(rich, the store, the alerts) would slow every start of it.
"""
