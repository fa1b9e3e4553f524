using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>Which activations static quantization chooses by default, and the rules that change the choice.</summary>
public class ActivationPolicyTests
{
    private const int Tokens = 4, Hidden = 16;

    [Fact]
    public void ByDefault_OnlyTheInputsOfWeightedOperators_AreQuantized_NotTheResidualStream_NorAttentionProducts()
    {
        OnnxModel model = OnnxModel.Parse(Block().ToByteArray());
        Assert.Equal(["x", "n"], OnnxStaticQuantizer.ActivationCandidates(model));
    }

    [Fact]
    public void UnnamedOptionalOutputs_AndUnnamedNodes_AreHandled()
    {
        // Two Dropouts leave their optional mask output unnamed; the second MatMul has no name, so it goes by its output's.
        OnnxModel model = OnnxModel.Parse(Model(
            "dropouts",
            [
                Node("Dropout", "drop1", ["x"], ["d1", ""]),
                Node("MatMul", "mm1", ["d1", "w1"], ["m1"]),
                Node("Dropout", "drop2", ["m1"], ["d2", ""]),
                Node("MatMul", "", ["d2", "w2"], ["out"]),
            ],
            [Tensor("w1", Random(Hidden * Hidden, 1), Hidden, Hidden), Tensor("w2", Random(Hidden * Hidden, 2), Hidden, Hidden)],
            [Value("x", 1, Tokens, Hidden)],
            [Value("out", 1, Tokens, Hidden)]).ToByteArray());
        Assert.Equal(["d1", "d2"], OnnxStaticQuantizer.ActivationCandidates(model));
        OnnxStaticQuantizationOptions options = new();
        options.ActivationExcludeNodes.Add(new NamePattern("out"));
        Assert.Equal(["d1"], OnnxStaticQuantizer.ActivationCandidates(model, options));
    }

    [Fact]
    public void Rules_AddOperators_AttentionProducts_AndNamePatterns()
    {
        OnnxModel model = OnnxModel.Parse(Block().ToByteArray());
        OnnxStaticQuantizationOptions products = new() { QuantizeActivationProducts = true };
        Assert.Equal(["x", "n", "m2", "nt"], OnnxStaticQuantizer.ActivationCandidates(model, products));

        OnnxStaticQuantizationOptions adds = new();
        adds.ActivationOpTypes.Add("Add");
        Assert.Equal(["x", "m1", "h", "n"], OnnxStaticQuantizer.ActivationCandidates(model, adds));

        OnnxStaticQuantizationOptions excluded = new();
        excluded.ActivationExcludeNodes.Add(new NamePattern("mm2"));
        Assert.Equal(["x"], OnnxStaticQuantizer.ActivationCandidates(model, excluded));

        OnnxStaticQuantizationOptions included = new();
        included.ActivationIncludeNodes.Add(new NamePattern("mm2"));
        Assert.Equal(["n"], OnnxStaticQuantizer.ActivationCandidates(model, included));

        // ExcludeNodes keeps a node wholly in float; IncludeNodes chooses weights only.
        OnnxStaticQuantizationOptions wholly = new();
        wholly.ExcludeNodes.Add(new NamePattern("mm1"));
        Assert.Equal(["n"], OnnxStaticQuantizer.ActivationCandidates(model, wholly));
        OnnxStaticQuantizationOptions weights = new();
        weights.IncludeNodes.Add(new NamePattern("mm1"));
        Assert.Equal(["x", "n"], OnnxStaticQuantizer.ActivationCandidates(model, weights));
    }

    [Fact]
    public async Task SeparateWeightAndActivationRules_AreAppliedToTheGraph_AndItRunsInOrt()
    {
        ModelProto proto = Block();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxStaticQuantizationOptions options = new();
        options.IncludeNodes.Add(new NamePattern("mm1"));
        options.ActivationExcludeNodes.Add(new NamePattern("mm1"));
        OnnxStaticQuantizationResult result = await OnnxStaticQuantizer.QuantizeAsync(model, Inputs(6, seed: 1), options);

        Assert.Equal(["w1"], result.Weights.Select(w => w.Weight));
        Assert.Equal(["n"], result.Activations.Keys);
        NodeProto mm1 = model.Proto.Graph.Node.Single(n => n.Name == "mm1"), mm2 = model.Proto.Graph.Node.Single(n => n.Name == "mm2");
        Assert.Equal("x", mm1.Input[0]);
        Assert.NotEqual("n", mm2.Input[0]);
        Assert.Equal(["w1"], model.Proto.Graph.Node.Where(n => n.OpType == "DequantizeLinear" && n.Output[0].StartsWith('w')).Select(n => n.Output[0]));
        Assert.Contains(model.Proto.Graph.Initializer, t => t.Name == "w2" && t.DataType == (int)TensorProto.Types.DataType.Float);

        float[] input = Random(Tokens * Hidden, 99, 2);
        float[] expected = RunSingle(proto.ToByteArray(), "x", input, [1, Tokens, Hidden]);
        Assert.True(Cosine(expected, RunSingle(model.Proto.ToByteArray(), "x", input, [1, Tokens, Hidden], GraphOptimizationLevel.ORT_ENABLE_ALL)) > 0.99);
    }

    [Fact]
    public async Task SmoothQuant_RunsFirst_OnTheSameData_AndCancellationLeavesTheModelAsItWas()
    {
        ModelProto proto = Block();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxStaticQuantizationOptions options = new() { SmoothQuant = new OnnxSmoothQuantOptions() };
        Assert.Throws<NotSupportedException>(() => OnnxStaticQuantizer.Quantize(model, new Dictionary<string, QuantizationParameters>(), options));
        using CancellationTokenSource cancel = new();
        int generated = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => OnnxStaticQuantizer.QuantizeAsync(model, CalibrationDataSource.FromGenerator(4, i =>
        {
            if (++generated == 6)
            {
                cancel.Cancel(); // in the second pass over the data: smoothing is done, calibration is not
            }

            return Feed("x", Random(Tokens * Hidden, i, 2), 1, Tokens, Hidden);
        }), options, cancellationToken: cancel.Token));
        Assert.Equal(6, generated);
        Assert.Equal(proto, model.Proto);

        OnnxStaticQuantizationResult result = await OnnxStaticQuantizer.QuantizeAsync(model, Inputs(6, seed: 1), options);
        OnnxSmoothQuantGroup group = Assert.Single(Assert.IsType<OnnxSmoothQuantResult>(result.SmoothQuant).Groups);
        Assert.Equal(["mm2"], group.Consumers);
        Assert.Equal(2, result.Activations.Count);
        Assert.Contains("x", result.Activations.Keys);
        float[] input = Random(Tokens * Hidden, 98, 2);
        Assert.True(Cosine(RunSingle(proto.ToByteArray(), "x", input, [1, Tokens, Hidden]), RunSingle(model.Proto.ToByteArray(), "x", input, [1, Tokens, Hidden])) > 0.99);
    }

    [Fact]
    public async Task SmoothQuant_WithExplicitScales_SmoothsAGraphInputToo_AndRunsStatic()
    {
        ModelProto proto = Block();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxStaticQuantizationOptions options = new() { SmoothQuant = new OnnxSmoothQuantOptions { ExplicitScales = true } };
        OnnxStaticQuantizationResult result = await OnnxStaticQuantizer.QuantizeAsync(model, Inputs(6, seed: 1), options);

        // x is a graph input that the residual Add reads too: the explicit Mul feeds mm1 only, the Add still reads x.
        OnnxSmoothQuantResult smoothed = Assert.IsType<OnnxSmoothQuantResult>(result.SmoothQuant);
        Assert.Equal([("x", OnnxScaleProducerKind.ExplicitScale), ("n", OnnxScaleProducerKind.LayerNormalization)], smoothed.Groups.Select(g => (g.Input, g.ProducerKind)));
        Assert.Empty(smoothed.Skipped);
        Assert.Equal("x", model.Proto.Graph.Node.Single(n => n.Name == smoothed.Groups[0].Producer).Input[0]);
        Assert.Contains("x", model.Proto.Graph.Node.Single(n => n.Name == "residual").Input);
        float[] input = Random(Tokens * Hidden, 98, 2);
        Assert.True(Cosine(RunSingle(proto.ToByteArray(), "x", input, [1, Tokens, Hidden]), RunSingle(model.Proto.ToByteArray(), "x", input, [1, Tokens, Hidden], GraphOptimizationLevel.ORT_ENABLE_ALL)) > 0.99);
    }

    /// <summary>
    /// A transformer-like block (opset 17): x -> MatMul(w1) = m1 -> Add(b1) = h -> Add(h, x) = r -> LayerNormalization = n
    /// -> MatMul(w2) = m2; Transpose(n) = nt; MatMul(m2, nt) = out (an attention-like product of two activations).
    /// </summary>
    private static ModelProto Block() => Model(
        "block",
        [
            Node("MatMul", "mm1", ["x", "w1"], ["m1"]),
            Node("Add", "bias", ["m1", "b1"], ["h"]),
            Node("Add", "residual", ["h", "x"], ["r"]),
            Node("LayerNormalization", "norm", ["r", "gamma", "beta"], ["n"], Int("axis", -1)),
            Node("MatMul", "mm2", ["n", "w2"], ["m2"]),
            Node("Transpose", "transpose", ["n"], ["nt"], Ints("perm", 0, 2, 1)),
            Node("MatMul", "scores", ["m2", "nt"], ["out"]),
        ],
        [
            Tensor("w1", Random(Hidden * Hidden, 1), Hidden, Hidden),
            Tensor("b1", Random(Hidden, 2), Hidden),
            Tensor("gamma", Random(Hidden, 3, 0.5f).Select(v => v + 1).ToArray(), Hidden),
            Tensor("beta", Random(Hidden, 4, 0.2f), Hidden),
            Tensor("w2", Random(Hidden * Hidden, 5), Hidden, Hidden),
        ],
        [Value("x", 1, Tokens, Hidden)],
        [Value("out", 1, Tokens, Tokens)],
        opset: 17);

    private static ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Inputs(int count, int seed) =>
        CalibrationDataSource.FromGenerator(count, i => Feed("x", Random(Tokens * Hidden, (seed * 1000) + i, 2), 1, Tokens, Hidden));
}
