"""CrossLM: the LLM writes task data, the silos' SLMs judge it, both learn from what they judge well.

Deng, Qiao, Ren, Liu, Zhang, "Mutual Enhancement of Large and Small Language Models with Cross-Silo Knowledge
Transfer", arXiv:2312.05842 (2023), method section. Each round, after FedAvg of the silos' SLM adapters, the
method's steps, as this package numbers them (each module's docstring cites its step), live in one module each:

1. `generation` — the LLM generates label-conditioned samples (prompts, cleaning, filters);
2. `feedback` — each silo's SLM rates each sample by P(intended label); only the scores leave the silo;
3. `scores` — the server validates and combines the scores into rewards, and keeps the accepted samples;
4. `reward` — the LLM's reward-weighted likelihood update on its own generations;
5. `mixing` — next round the silos train on the kept samples mixed into their private data.

`step.CrossLMStep` runs steps 1, 3 and 4 on the server; the Flower apps and the generation engine only call in.
"""
