"""DPO against TRL's DPOTrainer on the same token ids.

TRL's trainer is the DPO implementation most readers compare with. Agreeing with it on a real batch
checks what the hand-worked tests in test_losses.py cannot: which tokens are scored (the shift
from logits to targets, the prompt/response boundary, padding), that log-probs are summed over the
response, and where beta and pi_ref enter

    L = -log sigma(beta * [(log pi_theta(y_w|x) - log pi_ref(y_w|x))
                           - (log pi_theta(y_l|x) - log pi_ref(y_l|x))]).

TRL is given each prompt x ending in <eos>, and it appends <eos> to y_w and y_l, so its sequences
are this project's `x <eos> y <eos>` (asserted below). The project's batches are built from TRL's
input_ids and completion_mask, so both sides score the same tokens; pi_ref is a perturbed copy
of pi_theta, so the loss is not log 2. The loss is compared twice: the project's formula on TRL's
own per-token log-probs, and the project's whole pipeline (collate, response_logprobs,
pairwise_loss) on the same ids.

Precision: the models run in float64, but both sides take the softmax in float32 (TRL's chunked
log-prob kernel folds the logits in float32 whatever the model's dtype; `response_logprobs` casts
them with .float()), and TRL returns a float32 loss. So per-token log-probs agree to float32's
tolerances, and the losses to 1e-6: a sequence log-prob here is a float32 sum of magnitude < 128,
off by a few 1e-6 nats, and the loss moves by beta * sigma(-beta * delta) < 0.1 per nat. Any
change to the formula (a sign, a missing pi_ref term, averaging instead of summing, beta
misplaced) moves the loss by more than 1e-2.
"""

import copy
import math

import pytest
import torch
from datasets import Dataset

from alol_min.lm.batching import EncodedPairs, collate, encode_pairs, response_logprobs
from alol_min.lm.models import EOS, ModelConfig, build_model, train_tokenizer
from alol_min.losses import dpo_implicit_rewards, pairwise_loss

trl = pytest.importorskip("trl")
# TRL 1.16 calls transformers 5's deprecated `is_gradient_checkpointing` around pi_ref's forward.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated")

BETA = 0.1
TOL = 1e-6
X = ["How are you today?", "What is the capital of France?", "Can you help me?", "Tell me a joke."]
Y_W = [
    " I am well, thanks for asking.",
    " Paris is the capital of France.",
    " Sure, what is the question?",
    " Why did the chicken cross the road? To get to the other side.",
]
Y_L = [" Go away.", " I do not know, maybe Rome.", " No.", " Jokes are boring."]
MODELS = ("pi_theta", "pi_ref")
SIDES = ("w", "l")  # y_w (chosen), y_l (rejected)


def unpad(batch, rows) -> EncodedPairs:
    """The project's view of TRL's rows: ids up to the attention mask, the response from the first
    completion token."""
    ids, starts = [], []
    for b in rows:
        length = int(batch["attention_mask"][b].sum())
        ids.append(batch["input_ids"][b, :length].tolist())
        starts.append(int(batch["completion_mask"][b].nonzero()[0]))
    return EncodedPairs(ids, starts)


@pytest.fixture(scope="module")
def dpo(tmp_path_factory):
    """TRL's loss, metrics and per-token log-probs on one batch of all pairs, and the project's
    batches of the same rows with their per-token log-probs."""
    tokenizer = train_tokenizer((X + Y_W + Y_L) * 2, vocab_size=400)  # whole words merge
    pi_theta = build_model(ModelConfig.preset("micro"), tokenizer, seed=0).double()
    pi_ref = copy.deepcopy(pi_theta)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in pi_ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    data = Dataset.from_dict({"prompt": [x + EOS for x in X], "chosen": Y_W, "rejected": Y_L})
    args = trl.DPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trl_dpo")),
        report_to="none",
        beta=BETA,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=False,
        max_length=None,
        per_device_train_batch_size=len(X),
        use_cpu=True,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
    )
    trainer = trl.DPOTrainer(
        model=pi_theta, ref_model=pi_ref, args=args, train_dataset=data, processing_class=tokenizer
    )
    # The batch TRL's collator builds from its tokenized dataset: y_w rows, then y_l rows.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(X))])

    per_token = {}  # TRL's per-token log-probs [2B, L-1] (0 off the completion), by model
    for name, model in zip(MODELS, (trainer.model, trainer.ref_model)):

        def recording(*args, _forward=model.forward, _name=name, **kwargs):
            out = _forward(*args, **kwargs)
            per_token[_name] = out.log_probs.detach()
            return out

        model.forward = recording
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    metrics = trainer._metrics["train" if trainer.model.training else "eval"]

    B = len(X)
    encoded = {"w": unpad(batch, range(B)), "l": unpad(batch, range(B, 2 * B))}
    ours = {k: collate(enc, range(B), tokenizer.pad_token_id) for k, enc in encoded.items()}
    with torch.no_grad():
        logp = {
            (m, k): response_logprobs(model, ours[k])[0]
            for m, model in zip(MODELS, (pi_theta, pi_ref))
            for k in SIDES
        }
    return dict(
        tokenizer=tokenizer,
        batch=batch,
        loss=loss.item(),
        metrics={k: v[-1] for k, v in metrics.items()},
        per_token=per_token,
        encoded=encoded,
        ours=ours,
        logp=logp,
    )


def project_loss(logp, mask):
    """The project's per-pair DPO loss [B] from per-token log-probs keyed (model, side)."""
    return pairwise_loss(
        "dpo",
        logp_chosen=logp["pi_theta", "w"],
        mask_chosen=mask["w"],
        logp_rejected=logp["pi_theta", "l"],
        mask_rejected=mask["l"],
        ref_logp_chosen=logp["pi_ref", "w"],
        ref_logp_rejected=logp["pi_ref", "l"],
        beta=BETA,
    )


def trl_per_token(dpo):
    """TRL's own per-token log-probs and shifted completion mask, split into y_w and y_l halves."""
    mask = dpo["batch"]["completion_mask"][:, 1:]  # the logits at t score token t+1
    logp = {(m, k): half for m in MODELS for k, half in zip(SIDES, dpo["per_token"][m].chunk(2))}
    return logp, dict(zip(SIDES, mask.chunk(2)))


def our_masks(dpo):
    return {k: dpo["ours"][k]["response_mask"] for k in SIDES}


def test_trl_sequences_are_the_project_format(dpo):
    """TRL's rows are `encode_pairs`' x <eos> y <eos>, its completion starting at y: TRL adds no
    other token (no BOS) and splits each sequence at the prompt's <eos>."""
    for k, y in zip(SIDES, (Y_W, Y_L)):
        mine = encode_pairs(dpo["tokenizer"], X, y, 10**4, 10**4)
        assert mine.input_ids == dpo["encoded"][k].input_ids
        assert mine.response_start == dpo["encoded"][k].response_start


def test_response_masks_and_token_logprobs_agree(dpo):
    """The same targets (response_mask = TRL's shifted completion_mask) and log pi(y_t | x, y_<t)."""
    trl_logp, trl_mask = trl_per_token(dpo)
    for k, mask in our_masks(dpo).items():
        width = mask.shape[1]  # TRL pads y_w and y_l rows to one width, the project each side
        assert torch.equal(mask.bool(), trl_mask[k][:, :width].bool())
        assert not trl_mask[k][:, width:].any()
        for m in MODELS:
            torch.testing.assert_close(
                dpo["logp"][m, k][mask.bool()], trl_logp[m, k][trl_mask[k].bool()]
            )


def test_loss_on_trl_logprobs_matches_trl(dpo):
    """The formula alone: the project's loss on TRL's own per-token log-probs."""
    logp, mask = trl_per_token(dpo)
    assert abs(project_loss(logp, mask).mean().item() - dpo["loss"]) < TOL
    assert abs(dpo["loss"] - math.log(2)) > 1e-2  # pi_theta != pi_ref: not the trivial loss


def test_end_to_end_loss_matches_trl(dpo):
    """The project's pipeline (collate, response_logprobs, pairwise_loss) on the same token ids."""
    assert abs(project_loss(dpo["logp"], our_masks(dpo)).mean().item() - dpo["loss"]) < TOL


def test_implicit_rewards_match_trl_metrics(dpo):
    """r = beta * log(pi_theta(y|x) / pi_ref(y|x)); TRL logs batch means of r_w, r_l, r_w - r_l
    and of 1[r_w > r_l]."""
    logp, mask = dpo["logp"], our_masks(dpo)
    r_w, r_l = dpo_implicit_rewards(
        logp["pi_theta", "w"], mask["w"], logp["pi_theta", "l"], mask["l"],
        logp["pi_ref", "w"], logp["pi_ref", "l"], beta=BETA,
    )  # fmt: skip
    metrics = dpo["metrics"]
    assert (r_w - r_l).abs().min() > 1e-3  # no pair sits on the accuracy threshold
    assert r_w.mean().item() == pytest.approx(metrics["rewards/chosen"], abs=TOL)
    assert r_l.mean().item() == pytest.approx(metrics["rewards/rejected"], abs=TOL)
    assert (r_w - r_l).mean().item() == pytest.approx(metrics["rewards/margins"], abs=TOL)
    assert (r_w > r_l).double().mean().item() == metrics["rewards/accuracies"]
