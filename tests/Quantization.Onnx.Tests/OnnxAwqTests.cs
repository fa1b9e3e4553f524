using System.Runtime.InteropServices;

using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

public class OnnxAwqTests
{
    private const int Channels = 64;
    private static readonly int[] Shape = [4, 16, Channels];

    /// <summary>4-bit symmetric weights in groups of 32 inputs.</summary>
    private static readonly QuantizationScheme Scheme = QuantizationScheme.Int4PerGroup(32);

    [Fact]
    public async Task Awq_HasLessOutputErrorThanRoundToNearest_At4BitsPerGroup()
    {
        ModelProto proto = Graph();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxAwqResult result = await OnnxAwq.ApplyAsync(model, Batches(), new AwqOptions { Scheme = Scheme });

        // LayerNorm -> q, k, v; the graph input x2 (an explicit Mul by 1/s) -> up; up's output -> down (folded into up's columns).
        Assert.Empty(result.Skipped);
        Assert.Equal(
            [("y", OnnxScaleProducerKind.LayerNormalization), ("x2", OnnxScaleProducerKind.ExplicitScale), ("h", OnnxScaleProducerKind.Linear)],
            result.Groups.Select(g => (g.Input, g.ProducerKind)));
        Assert.All(result.Groups, g => Assert.True(g.Alpha > 0, $"{g.Input}: the outlier channels should call for scales (α {g.Alpha})"));
        Assert.All(result.Groups, g => Assert.Equal(g.SearchErrors.Values.Min(), g.SearchErrors[g.Alpha]));
        Assert.Equal(["q", "k", "v", "up", "down"], result.Groups.SelectMany(g => g.ClipRatios.Keys));

        float[][] reference = Outputs(proto.ToByteArray());
        float[][] rtn = Outputs(FakeQuantized(proto));
        float[][] awq = Outputs(FakeQuantized(model.Proto));
        for (int o = 0; o < reference.Length; o++)
        {
            double rtnError = SquaredError(reference[o], rtn[o]), awqError = SquaredError(reference[o], awq[o]);
            Assert.True(awqError < 0.8 * rtnError, $"output {o}: AWQ squared error {awqError}, RTN {rtnError}");
        }
    }

    [Fact]
    public async Task Awq_WithoutClipping_KeepsTheFloatModel()
    {
        ModelProto proto = Graph();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxAwqResult result = await OnnxAwq.ApplyAsync(model, Batches(), new AwqOptions { Scheme = Scheme, Clip = false });
        Assert.Equal(3, result.Groups.Count);
        Assert.All(result.Groups, g => Assert.All(g.Consumers, c => Assert.Equal("clipping is off", g.Unclipped[c])));
        Assert.Contains(model.Proto.Graph.Node, n => n.OpType == "Mul" && n.Input[0] == "x2");

        float[][] reference = Outputs(proto.ToByteArray()), folded = Outputs(model.Proto.ToByteArray());
        for (int o = 0; o < reference.Length; o++)
        {
            double largest = reference[o].Max(Math.Abs);
            double error = reference[o].Zip(folded[o], (a, b) => Math.Abs(a - (double)b)).Max();
            Assert.True(error <= 1e-5 * Math.Max(1, largest), $"output {o}: largest error {error} of {largest}");
        }
    }

    [Fact]
    public async Task Awq_ClipsQueryAndKey_OnlyWhenAsked()
    {
        ModelProto proto = AttentionGraph();
        OnnxAwqResult result = await OnnxAwq.ApplyAsync(OnnxModel.Parse(proto.ToByteArray()), Batches(), new AwqOptions { Scheme = Scheme });
        OnnxAwqGroup group = Assert.Single(result.Groups);
        Assert.Equal(["k", "q"], group.Unclipped.Keys.Order());
        Assert.Equal(["v"], group.ClipRatios.Keys);

        OnnxAwqResult all = await OnnxAwq.ApplyAsync(OnnxModel.Parse(proto.ToByteArray()), Batches(), new AwqOptions { Scheme = Scheme, ClipQueryKey = true });
        Assert.Empty(Assert.Single(all.Groups).Unclipped);
    }

    [Fact]
    public async Task Awq_AlphaZeroWithoutClipping_IsRoundToNearest()
    {
        ModelProto proto = Graph();
        OnnxModel plain = OnnxModel.Parse(proto.ToByteArray()), awq = OnnxModel.Parse(proto.ToByteArray());
        await OnnxWeightQuantizer.QuantizeAsync(plain, Batches());
        AwqOptions options = new() { Clip = false };
        options.AlphaGrid.Clear();
        options.AlphaGrid.Add(0);
        await OnnxWeightQuantizer.QuantizeAsync(awq, Batches(), new OnnxWeightQuantizationOptions { Awq = options });
        Assert.Equal(plain.Proto.ToByteArray(), awq.Proto.ToByteArray());

        // With the search on, the same quantizer does better than without it (int8 per channel, its default scheme).
        OnnxModel searched = OnnxModel.Parse(proto.ToByteArray());
        await OnnxWeightQuantizer.QuantizeAsync(searched, Batches(), new OnnxWeightQuantizationOptions { Awq = new AwqOptions() });
        float[][] reference = Outputs(proto.ToByteArray()), rtn = Outputs(plain.Proto.ToByteArray()), withAwq = Outputs(searched.Proto.ToByteArray());
        Assert.True(reference.Select((r, o) => SquaredError(r, withAwq[o])).Sum() < reference.Select((r, o) => SquaredError(r, rtn[o])).Sum());
    }

    [Fact]
    public async Task Awq_RefusesBadInput_AndLeavesTheModelUnchanged()
    {
        ModelProto proto = Graph();
        byte[] bytes = proto.ToByteArray();
        OnnxModel model = OnnxModel.Parse(bytes);

        await Assert.ThrowsAsync<InvalidOperationException>(() => OnnxAwq.ApplyAsync(model, CalibrationDataSource.FromBatches(Array.Empty<IReadOnlyCollection<NamedOnnxValue>>()), new AwqOptions { Scheme = Scheme }));
        await Assert.ThrowsAsync<InvalidOperationException>(() => OnnxWeightQuantizer.QuantizeAsync(model, CalibrationDataSource.FromBatches(Array.Empty<IReadOnlyCollection<NamedOnnxValue>>()), new OnnxWeightQuantizationOptions { Awq = new AwqOptions() }));

        float[] poisoned = Input(3, 0);
        poisoned[100] = float.NaN;
        NonFiniteValueException nan = await Assert.ThrowsAsync<NonFiniteValueException>(() => OnnxAwq.ApplyAsync(model, CalibrationDataSource.FromBatches([Feeds(poisoned, Input(3, 1))]), new AwqOptions { Scheme = Scheme }));
        Assert.Equal(("y", 64L), (nan.TensorName, nan.Index)); // x[100] poisons row 1 of the LayerNorm output
        await Assert.ThrowsAsync<NonFiniteValueException>(() => OnnxWeightQuantizer.QuantizeAsync(model, CalibrationDataSource.FromBatches([Feeds(poisoned, Input(3, 1))]), new OnnxWeightQuantizationOptions { Awq = new AwqOptions() }));

        await Assert.ThrowsAsync<ArgumentException>(() => OnnxAwq.ApplyAsync(model, Batches(), new AwqOptions()));
        await Assert.ThrowsAsync<ArgumentException>(() => OnnxWeightQuantizer.QuantizeAsync(model, Batches(), new OnnxWeightQuantizationOptions { Awq = new AwqOptions { Scheme = Scheme } }));
        await Assert.ThrowsAsync<ArgumentException>(() => OnnxAwq.ApplyAsync(model, Batches(), new AwqOptions { Scheme = new QuantizationScheme(QuantizedType.Int8, true, QuantizationGranularity.PerToken) }));
        Assert.Throws<NotSupportedException>(() => OnnxWeightQuantizer.Quantize(model, new OnnxWeightQuantizationOptions { Awq = new AwqOptions() }));

        AwqOptions badAlpha = new() { Scheme = Scheme };
        badAlpha.AlphaGrid.Add(1.5);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => OnnxAwq.ApplyAsync(model, Batches(), badAlpha));
        AwqOptions badRatio = new() { Scheme = Scheme };
        badRatio.ClipRatios.Add(0);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => OnnxAwq.ApplyAsync(model, Batches(), badRatio));
        AwqOptions noRatio = new() { Scheme = Scheme };
        noRatio.ClipRatios.Clear();
        await Assert.ThrowsAsync<ArgumentException>(() => OnnxAwq.ApplyAsync(model, Batches(), noRatio));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => OnnxAwq.ApplyAsync(model, Batches(), new AwqOptions { Scheme = Scheme, SearchRows = 0 }));

        Assert.Equal(bytes, model.Proto.ToByteArray());
    }

    /// <summary>Inputs whose channels 5 and 40 are 20 times the others (x), and x2 with outlier channels 3 and 17.</summary>
    private static float[] Input(int seed, int which)
    {
        float[] values = Random(Shape.Aggregate(1, (a, b) => a * b), (seed * 2) + which, 2);
        int[] outliers = which == 0 ? [5, 40] : [3, 17];
        for (int i = 0; i < values.Length; i += Channels)
        {
            foreach (int j in outliers)
            {
                values[i + j] *= 20;
            }
        }

        return values;
    }

    private static IReadOnlyCollection<NamedOnnxValue> Feeds(float[] x, float[] x2) =>
        [.. Feed("x", x, Shape), .. Feed("x2", x2, Shape)];

    private static ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Batches() =>
        CalibrationDataSource.FromBatches(Enumerable.Range(0, 4).Select(i => Feeds(Input(i, 0), Input(i, 1))));

    /// <summary>The graph's outputs on held-out inputs, at ORT's basic level.</summary>
    private static float[][] Outputs(byte[] model)
    {
        using SessionOptions options = new() { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC };
        using InferenceSession session = new(model, options);
        List<float[]>[] outputs = [.. session.OutputNames.Select(_ => new List<float[]>())];
        foreach (int seed in new[] { 50, 51 })
        {
            using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> results = session.Run(Feeds(Input(seed, 0), Input(seed, 1)));
            for (int o = 0; o < outputs.Length; o++)
            {
                outputs[o].Add([.. results.Single(r => r.Name == session.OutputNames[o]).AsEnumerable<float>()]);
            }
        }

        return [.. outputs.Select(o => o.SelectMany(v => v).ToArray())];
    }

    private static double SquaredError(float[] expected, float[] actual) => expected.Zip(actual, (a, b) => (a - (double)b) * (a - b)).Sum();

    /// <summary>The model with every MatMul/Gemm weight replaced by its quantized and restored values (4-bit per group along K): what a weight-only 4-bit model computes.</summary>
    private static byte[] FakeQuantized(ModelProto proto)
    {
        ModelProto copy = proto.Clone();
        OnnxModel reader = OnnxModel.Parse(copy.ToByteArray());
        HashSet<string> weights = new(copy.Graph.Node.Where(n => n.OpType is "MatMul" or "Gemm").Select(n => n.Input[1]), StringComparer.Ordinal);
        foreach (TensorProto tensor in copy.Graph.Initializer.Where(t => weights.Contains(t.Name) && t.Dims.Count == 2))
        {
            bool transposed = copy.Graph.Node.Any(n => n.OpType == "Gemm" && n.Input[1] == tensor.Name && n.Attribute.Any(a => a.Name == "transB" && a.I == 1));
            (int k, int n) = transposed ? ((int)tensor.Dims[1], (int)tensor.Dims[0]) : ((int)tensor.Dims[0], (int)tensor.Dims[1]);
            float[] values = reader.ReadFloats(tensor);
            float[] rows = transposed ? values : Transpose(values, k, n);
            float[] restored = QuantizedTensor.Quantize(rows, [n, k], Scheme.WithGranularity(QuantizationGranularity.PerGroup(Scheme.Granularity.GroupSize, axis: 1))).Dequantize();
            float[] stored = transposed ? restored : Transpose(restored, n, k);
            tensor.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(stored.AsSpan()));
            tensor.FloatData.Clear();
        }

        return copy.ToByteArray();
    }

    private static float[] Transpose(float[] values, int rows, int columns)
    {
        float[] transposed = new float[values.Length];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                transposed[(c * rows) + r] = values[(r * columns) + c];
            }
        }

        return transposed;
    }

    /// <summary>LayerNorm(x) -> q, k, v (MatMul [64, 48] each); x2 -> up [64, 64] -> down [64, 32].</summary>
    private static ModelProto Graph()
    {
        float[] up = Weights(Channels * Channels, 20);
        for (int i = 0; i < up.Length; i++)
        {
            up[i] *= i % Channels is 7 or 50 ? 25 : 1; // outlier output channels of up, the input channels of down
        }

        return Model(
            "awq",
            [
                Node("LayerNormalization", "ln", ["x", "gamma", "beta"], ["y"], Int("axis", -1)),
                Node("MatMul", "q", ["y", "wq"], ["q_out"]),
                Node("MatMul", "k", ["y", "wk"], ["k_out"]),
                Node("MatMul", "v", ["y", "wv"], ["v_out"]),
                Node("MatMul", "up", ["x2", "wup"], ["h"]),
                Node("MatMul", "down", ["h", "wdown"], ["out"]),
            ],
            [
                Tensor("gamma", Gamma(), Channels), Tensor("beta", Random(Channels, 11, 0.2f), Channels),
                Tensor("wq", Weights(Channels * 48, 12), Channels, 48), Tensor("wk", Weights(Channels * 48, 13), Channels, 48), Tensor("wv", Weights(Channels * 48, 14), Channels, 48),
                Tensor("wup", up, Channels, Channels), Tensor("wdown", Weights(Channels * 32, 15), Channels, 32),
            ],
            [Value("x", 4, 16, Channels), Value("x2", 4, 16, Channels)],
            [Value("q_out", 4, 16, 48), Value("k_out", 4, 16, 48), Value("v_out", 4, 16, 48), Value("out", 4, 16, 32)],
            opset: 17);
    }

    /// <summary>Heavy-tailed weights, as trained ones are: the cubes of uniform values, so each group's largest |w| stands out.</summary>
    private static float[] Weights(int count, int seed) => [.. Random(count, seed, 2).Select(w => w * w * w)];

    /// <summary>γ with outlier channels 9 and 33 (10 times the others).</summary>
    private static float[] Gamma()
    {
        float[] gamma = [.. Random(Channels, 10).Select(g => 1 + g)];
        gamma[9] = 10;
        gamma[33] = -10;
        return gamma;
    }

    /// <summary>LayerNorm(x) -> q, k, v; softmax(q·kᵀ / 8)·v; x2 unused but fed.</summary>
    private static ModelProto AttentionGraph() => Model(
        "attention",
        [
            Node("LayerNormalization", "ln", ["x", "gamma", "beta"], ["y"], Int("axis", -1)),
            Node("MatMul", "q", ["y", "wq"], ["q_out"]),
            Node("MatMul", "k", ["y", "wk"], ["k_out"]),
            Node("MatMul", "v", ["y", "wv"], ["v_out"]),
            Node("Transpose", "k_t", ["k_out"], ["k_transposed"], Ints("perm", 0, 2, 1)),
            Node("MatMul", "scores", ["q_out", "k_transposed"], ["s"]),
            Node("Div", "scale", ["s", "eight"], ["s_scaled"]),
            Node("Softmax", "softmax", ["s_scaled"], ["p"], Int("axis", -1)),
            Node("MatMul", "context", ["p", "v_out"], ["c"]),
            Node("Identity", "x2_sink", ["x2"], ["x2_out"]),
        ],
        [
            Tensor("gamma", Gamma(), Channels), Tensor("beta", Random(Channels, 11, 0.2f), Channels), Tensor("eight", [8f]),
            Tensor("wq", Weights(Channels * 48, 12), Channels, 48), Tensor("wk", Weights(Channels * 48, 13), Channels, 48), Tensor("wv", Weights(Channels * 48, 14), Channels, 48),
        ],
        [Value("x", 4, 16, Channels), Value("x2", 4, 16, Channels)],
        [Value("c", 4, 16, 48), Value("x2_out", 4, 16, Channels)],
        opset: 17);
}
