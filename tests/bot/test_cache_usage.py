"""What the prompt cache saved is shown by `status` and exported on the model span."""

from __future__ import annotations

from tests.bot.helpers import DEBATE, say, summon, thread
from threadteam.bot.telemetry import TracedModel
from threadteam.teams.models import ChatMessage, ModelRequest, Usage
from threadteam.teams.models.scripted import ScriptedModel, reply


async def test_status_says_how_many_input_tokens_came_from_the_prompt_cache(started, poster):
    model = ScriptedModel([reply("Up.", usage=Usage(1200, 40)),
                           reply("Down.", usage=Usage(2600, 50, cached_input_tokens=1152,
                                                      cache_write_tokens=300)),
                           reply("FINAL ANSWER: flat.", usage=Usage(3100, 60, 2560))])
    host = await started(model, DEBATE)
    key = thread()
    await host.handle(summon(key, "debate oil"))
    await host.idle()
    await host.handle(say(key, "status"))
    assert "tokens: 6,900 in (3,712 from the prompt cache) / 150 out" in poster.notices(key)[-1]


async def test_the_model_span_exports_cache_reads_and_writes(spans):
    model = TracedModel(ScriptedModel([reply("Up.", usage=Usage(2048, 12, 1920, 64))]), "t1")
    await model.complete(ModelRequest(model="scripted", system="Argue.", agent="bull",
                                      messages=(ChatMessage("user", "Oil?", name="task"),)))
    [chat] = [s for s in spans.get_finished_spans() if s.name == "chat scripted"]
    attributes = chat.attributes or {}
    assert attributes["gen_ai.usage.input_tokens"] == 2048
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 1920
    assert attributes["gen_ai.usage.cache_creation.input_tokens"] == 64
