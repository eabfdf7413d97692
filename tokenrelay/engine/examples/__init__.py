"""Example graphs registered by default: `joke_poem`, `custom_progress` and `calculator_agent`.

Each module has `build(model)`, a factory that compiles its graph around the job's chat model.
"""
