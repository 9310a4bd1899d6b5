"""healer's judge, decide and ladder as of commit d27d8a3, frozen for bench/judgement.py (pure).

A deploy is judged only against its own first healthy cycle (one cycle of three samples), and
the remedy ladder of issue 12 decides. The live healer/ code changes under the statistical judge
of issue 15; this copy stays, so the benchmark can show the previous policy beside the new one.
"""
