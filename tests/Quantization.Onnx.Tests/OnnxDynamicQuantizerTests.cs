using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

public class OnnxDynamicQuantizerTests
{
    private static readonly long[] TokenShape = [1, 5, 16];

    [Fact]
    public void SharedInputAndBias_RunInOrt_AndFuseIntoIntegerKernels()
    {
        ModelProto proto = Projections();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxDynamicQuantizationResult result = OnnxDynamicQuantizer.Quantize(model, new OnnxDynamicQuantizationOptions { Scheme = OrtInt8Kernels.WeightScheme });

        // q and k share x (one DynamicQuantizeLinear), v reads q's output; the activation product q·kᵀ stays float.
        Assert.Equal(["wq", "wk", "wv"], result.Weights.Select(w => w.Weight));
        Assert.All(result.Weights, w => Assert.Equal(1, w.Axis));
        Assert.Equal(["x", "q"], result.Activations);
        Assert.Equal(2, model.Proto.Graph.Node.Count(n => n.OpType == "DynamicQuantizeLinear"));
        Assert.Equal(1, model.Proto.Graph.Node.Count(n => n.OpType == "MatMul"));
        Assert.Equal([8], model.Proto.Graph.Initializer.Single(t => t.Name == "wq_scale").Dims);
        Assert.Equal((int)(OrtInt8Kernels.MaySaturate ? TensorProto.Types.DataType.Uint8 : TensorProto.Types.DataType.Int8), model.Proto.Graph.Initializer.Single(t => t.Name == "wq_quantized").DataType);
        Assert.Equal(["q_bias", "q_mm"], model.Proto.Graph.Node.Single(n => n.Name == "q_add").Input.Order(StringComparer.Ordinal));
        Assert.Equal("q_bias", model.Proto.Graph.Node.Single(n => n.Name == "q_add").Input[1]);

        byte[] quantized = model.Proto.ToByteArray();
        foreach (int seed in new[] { 10, 11, 12 })
        {
            float[] x = Random(5 * 16, seed, 2);
            float[] expected = RunSingle(proto.ToByteArray(), "x", x, TokenShape);
            Assert.True(Cosine(expected, RunSingle(quantized, "x", x, TokenShape)) > 0.999, "basic level");
            Assert.True(Cosine(expected, RunSingle(quantized, "x", x, TokenShape, GraphOptimizationLevel.ORT_ENABLE_ALL)) > 0.999, "default level");
        }

        string[] ops = OptimizedOpTypes(quantized);
        Assert.DoesNotContain("MatMulInteger", ops);
        Assert.DoesNotContain("Cast", ops);
        Assert.Equal(3, ops.Count(op => op is "MatMulIntegerToFloat" or "DynamicQuantizeMatMul"));
        Assert.Contains("DynamicQuantizeMatMul", ops); // v: its DynamicQuantizeLinear feeds nothing else
        Assert.Equal(1, ops.Count(op => op == "DynamicQuantizeLinear")); // x, shared by q and k
        Assert.DoesNotContain("Add", ops); // q's bias went into the fused kernel
    }

    [Theory]
    [InlineData(true, 1f)]
    [InlineData(false, 0.5f)]
    public void Gemm_WithTransBAlphaAndBias_MatchesFloat_AndFuses(bool transB, float alpha)
    {
        float[] w = Random(16 * 8, 3), c = Random(8, 4);
        ModelProto proto = Model(
            "gemm",
            [Node("Gemm", "gemm", ["x", "w", "c"], ["y"], Int("transB", transB ? 1 : 0), new AttributeProto { Name = "alpha", Type = AttributeProto.Types.AttributeType.Float, F = alpha })],
            [Tensor("w", w, transB ? [8, 16] : [16, 8]), Tensor("c", c, 8)],
            [Value("x", 4, 16)],
            [Value("y", 4, 8)]);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxDynamicQuantizationResult result = OnnxDynamicQuantizer.Quantize(model, new OnnxDynamicQuantizationOptions { Scheme = OrtInt8Kernels.WeightScheme });
        Assert.Equal(transB ? 0 : 1, result.Weights.Single().Axis);
        Assert.Equal([16, 8], model.Proto.Graph.Initializer.Single(t => t.Name == "w_quantized").Dims);

        float[] x = Random(4 * 16, 5, 2);
        float[] expected = RunSingle(proto.ToByteArray(), "x", x, [4, 16]);
        Assert.True(Cosine(expected, RunSingle(model.Proto.ToByteArray(), "x", x, [4, 16])) > 0.999, "basic level");
        Assert.True(Cosine(expected, RunSingle(model.Proto.ToByteArray(), "x", x, [4, 16], GraphOptimizationLevel.ORT_ENABLE_ALL)) > 0.999, "default level");
        string[] ops = OptimizedOpTypes(model.Proto.ToByteArray());
        Assert.Equal(["DynamicQuantizeMatMul"], ops);
    }

    [Fact]
    public void ExcludedAndUnfitNodes_StayFloat()
    {
        OnnxModel model = OnnxModel.Parse(Projections().ToByteArray());
        OnnxDynamicQuantizationOptions options = new();
        options.ExcludeNodes.Add(new NamePattern("k_*"));
        options.NodeSchemes["v_mm"] = QuantizationScheme.Int8PerTensor();
        OnnxDynamicQuantizationResult result = OnnxDynamicQuantizer.Quantize(model, options);
        Assert.Equal([("wq", (int?)1), ("wv", null)], result.Weights.Select(w => (w.Weight, w.Axis)));
        Assert.Empty(model.Proto.Graph.Initializer.Single(t => t.Name == "wv_scale").Dims);
        Assert.Contains(model.Proto.Graph.Initializer, t => t.Name == "wk" && t.DataType == (int)TensorProto.Types.DataType.Float);

        ModelProto transA = Model("gemm", [Node("Gemm", "gemm", ["x", "w"], ["y"], Int("transA", 1))], [Tensor("w", Random(16 * 8, 3), 16, 8)], [Value("x", 16, 4)], [Value("y", 4, 8)]);
        Assert.Empty(OnnxDynamicQuantizer.Quantize(OnnxModel.Parse(transA.ToByteArray())).Weights);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void OneSignedInputsAndLargeWeightPairs_UInt8WeightsNeverSaturate(bool perChannel)
    {
        // x in [0, 4] quantizes to codes near 255 (zero point 0), and the weight's rows come in pairs of one sign, so
        // u8 x s8 pair sums reach 255 x 127 x 2: vpmaddubsw saturates on CPUs without VNNI. Asymmetric uint8 weights
        // (a zero point per column) run on ONNX Runtime's u8 x u8 kernels, which widen first, on every CPU.
        const int K = 32, N = 16;
        float[] w = new float[K * N];
        for (int k = 0; k < K; k++)
        {
            for (int n = 0; n < N; n++)
            {
                w[(k * N) + n] = ((k / 2) + n) % 2 == 0 ? 1f : -0.9f;
            }
        }

        ModelProto proto = Model("pairs", [Node("MatMul", "mm", ["x", "w"], ["y"])], [Tensor("w", w, K, N)], [Value("x", 1, 64, K)], [Value("y", 1, 64, N)]);
        QuantizationGranularity granularity = perChannel ? QuantizationGranularity.PerChannel(0) : QuantizationGranularity.PerTensor;
        OnnxModel unsigned = OnnxModel.Parse(proto.ToByteArray()), signed = OnnxModel.Parse(proto.ToByteArray());
        OnnxDynamicQuantizer.Quantize(unsigned, new OnnxDynamicQuantizationOptions { Scheme = new QuantizationScheme(QuantizedType.UInt8, symmetric: false, granularity) });
        OnnxDynamicQuantizer.Quantize(signed, new OnnxDynamicQuantizationOptions { Scheme = new QuantizationScheme(QuantizedType.Int8, symmetric: true, granularity) });

        Assert.Equal((int)TensorProto.Types.DataType.Uint8, unsigned.Proto.Graph.Initializer.Single(t => t.Name == "w_quantized").DataType);
        TensorProto zeroPoints = unsigned.Proto.Graph.Initializer.Single(t => t.Name == "w_zero_point");
        Assert.Equal((int)TensorProto.Types.DataType.Uint8, zeroPoints.DataType);
        Assert.Equal(perChannel ? [N] : [], zeroPoints.Dims);
        Assert.Equal(["x_quantized", "w_quantized", "x_zero_point", "w_zero_point"], unsigned.Proto.Graph.Node.Single(n => n.OpType == "MatMulInteger").Input);
        Assert.Contains("DynamicQuantizeMatMul", OptimizedOpTypes(unsigned.Proto.ToByteArray()));

        float[] x = [.. Random(64 * K, 5, 8).Select(v => v + 4)];
        float[] expected = RunSingle(proto.ToByteArray(), "x", x, [1, 64, K]);
        foreach (GraphOptimizationLevel level in new[] { GraphOptimizationLevel.ORT_ENABLE_BASIC, GraphOptimizationLevel.ORT_ENABLE_ALL })
        {
            double unsignedCosine = Cosine(expected, RunSingle(unsigned.Proto.ToByteArray(), "x", x, [1, 64, K], level));
            double signedCosine = Cosine(expected, RunSingle(signed.Proto.ToByteArray(), "x", x, [1, 64, K], level));
            Assert.True(unsignedCosine > 0.9999, $"uint8 weights at {level}: cosine {unsignedCosine}");
            Assert.True(OrtInt8Kernels.MaySaturate || signedCosine > 0.9999, $"int8 weights at {level} on a CPU with VNNI: cosine {signedCosine}");
        }
    }

    [Fact]
    public void BadOptionsAndOldModels_AreRefused()
    {
        OnnxDynamicQuantizationOptions conv = new();
        conv.OpTypes.Add("Conv");
        Assert.Throws<ArgumentException>(() => OnnxDynamicQuantizer.Quantize(OnnxModel.Parse(Projections().ToByteArray()), conv));
        Assert.Throws<NotSupportedException>(() => OnnxDynamicQuantizer.Quantize(OnnxModel.Parse(Projections().ToByteArray()), new OnnxDynamicQuantizationOptions { Gptq = new GptqOptions() }));
        Assert.Throws<NotSupportedException>(() => OnnxDynamicQuantizer.Quantize(OnnxModel.Parse(Projections().ToByteArray()), new OnnxDynamicQuantizationOptions { MatMulNBits = new MatMulNBitsOptions() }));
        Assert.Throws<NotSupportedException>(() => OnnxDynamicQuantizer.Quantize(OnnxModel.Parse(Projections().ToByteArray()), new OnnxDynamicQuantizationOptions { Scheme = new QuantizationScheme(QuantizedType.Int8, symmetric: false, QuantizationGranularity.PerChannel(0)) }));
        Assert.Throws<NotSupportedException>(() => OnnxDynamicQuantizer.Quantize(OnnxModel.Parse(Projections().ToByteArray()), new OnnxDynamicQuantizationOptions { Scheme = new QuantizationScheme(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerGroup(8)) }));
        OnnxDynamicQuantizationOptions group = new();
        group.NodeSchemes["q_mm"] = QuantizationScheme.GgmlQ8_0();
        Assert.Contains("q_mm", Assert.Throws<NotSupportedException>(() => OnnxDynamicQuantizer.Quantize(OnnxModel.Parse(Projections().ToByteArray()), group)).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentNullException>(() => OnnxDynamicQuantizer.Quantize(null!));

        ModelProto old = Projections();
        old.OpsetImport[0].Version = 10;
        Assert.Throws<NotSupportedException>(() => OnnxDynamicQuantizer.Quantize(OnnxModel.Parse(old.ToByteArray())));

        ModelProto infinite = Projections();
        TensorProto wk = infinite.Graph.Initializer.Single(t => t.Name == "wk");
        float[] values = Random(16 * 8, 2);
        values[5] = float.PositiveInfinity;
        infinite.Graph.Initializer[infinite.Graph.Initializer.IndexOf(wk)] = Tensor("wk", values, 16, 8);
        OnnxModel model = OnnxModel.Parse(infinite.ToByteArray());
        Assert.Throws<NonFiniteValueException>(() => OnnxDynamicQuantizer.Quantize(model));
        Assert.Equal(infinite, model.Proto);
    }

    [Fact]
    public async Task QuantizeAsync_WithSmoothQuant_SmoothsFirst_AndStillFuses()
    {
        ModelProto proto = Projections();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxDynamicQuantizationOptions options = new() { Scheme = OrtInt8Kernels.WeightScheme, SmoothQuant = new OnnxSmoothQuantOptions { ExplicitScales = true, SearchAlpha = true } };
        OnnxDynamicQuantizationResult result = await OnnxDynamicQuantizer.QuantizeAsync(model, Calibration(), options);

        // x is a graph input (an explicit Mul by 1/s feeds q and k); q's bias Add and MatMul take 1/s for v.
        OnnxSmoothQuantResult smoothed = Assert.IsType<OnnxSmoothQuantResult>(result.SmoothQuant);
        Assert.Equal([("x", OnnxScaleProducerKind.ExplicitScale), ("q", OnnxScaleProducerKind.Linear)], smoothed.Groups.Select(g => (g.Input, g.ProducerKind)));
        Assert.Equal(["wq_scaled", "wk_scaled", "wv_scaled"], result.Weights.Select(w => w.Weight)); // the smoothed copies of the weights
        Assert.Equal(2, model.Proto.Graph.Node.Count(n => n.OpType == "DynamicQuantizeLinear"));

        byte[] quantized = model.Proto.ToByteArray();
        foreach (int seed in new[] { 10, 11, 12 })
        {
            float[] x = Random(5 * 16, seed, 2);
            Assert.True(Cosine(RunSingle(proto.ToByteArray(), "x", x, TokenShape), RunSingle(quantized, "x", x, TokenShape, GraphOptimizationLevel.ORT_ENABLE_ALL)) > 0.999);
        }

        string[] ops = OptimizedOpTypes(quantized);
        Assert.DoesNotContain("MatMulInteger", ops);
        Assert.Equal(3, ops.Count(op => op is "MatMulIntegerToFloat" or "DynamicQuantizeMatMul"));

        // Without SmoothQuant, the calibration data is not needed and the result is Quantize's.
        OnnxModel plain = OnnxModel.Parse(proto.ToByteArray()), reference = OnnxModel.Parse(proto.ToByteArray());
        Assert.Null((await OnnxDynamicQuantizer.QuantizeAsync(plain, Calibration())).SmoothQuant);
        OnnxDynamicQuantizer.Quantize(reference);
        Assert.Equal(reference.Proto, plain.Proto);
    }

    [Fact]
    public async Task SmoothQuant_FailureCancellationOrSynchronousCall_LeaveTheModelUnchanged()
    {
        ModelProto proto = Projections();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxDynamicQuantizationOptions options = new() { SmoothQuant = new OnnxSmoothQuantOptions { ExplicitScales = true } };
        Assert.Contains("QuantizeAsync", Assert.Throws<NotSupportedException>(() => OnnxDynamicQuantizer.Quantize(model, options)).Message, StringComparison.Ordinal);

        using CancellationTokenSource cancelled = new();
        await cancelled.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => OnnxDynamicQuantizer.QuantizeAsync(model, Calibration(), options, cancellationToken: cancelled.Token));

        float[] poisoned = Random(5 * 16, 1, 2);
        poisoned[3] = float.NaN;
        await Assert.ThrowsAsync<NonFiniteValueException>(() => OnnxDynamicQuantizer.QuantizeAsync(model, CalibrationDataSource.FromBatches([Feed("x", poisoned, 1, 5, 16)]), options));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => OnnxDynamicQuantizer.QuantizeAsync(model, Calibration(), new OnnxDynamicQuantizationOptions { SmoothQuant = new OnnxSmoothQuantOptions { Alpha = 2 } }));
        await Assert.ThrowsAsync<ArgumentNullException>(() => OnnxDynamicQuantizer.QuantizeAsync(model, null!, options));
        Assert.Equal(proto, model.Proto);
    }

    private static ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Calibration() =>
        CalibrationDataSource.FromBatches(Enumerable.Range(0, 4).Select(i => Feed("x", Random(5 * 16, 20 + i, 2), 1, 5, 16)));

    /// <summary>Runs ONNX Runtime's default optimisation on a model and returns the optimized graph's operator types.</summary>
    internal static string[] OptimizedOpTypes(byte[] model)
    {
        string optimized = Path.Combine(Path.GetTempPath(), $"optimized-{Guid.NewGuid():N}.onnx");
        try
        {
            using SessionOptions options = new() { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = optimized };
            using (new InferenceSession(model, options))
            {
            }

            return [.. OnnxModel.Load(optimized).Proto.Graph.Node.Select(n => n.OpType)];
        }
        finally
        {
            File.Delete(optimized);
        }
    }

    /// <summary>
    /// x [1, 5, 16] → q = x·wq + q_bias (bias first in the Add), k = x·wk, v = q·wv; output q·kᵀ-like product of v and k
    /// through a Transpose (an activation × activation MatMul).
    /// </summary>
    private static ModelProto Projections() => Model(
        "projections",
        [
            Node("MatMul", "q_mm", ["x", "wq"], ["q_mm"]),
            Node("Add", "q_add", ["q_bias", "q_mm"], ["q"]),
            Node("MatMul", "k_mm", ["x", "wk"], ["k"]),
            Node("MatMul", "v_mm", ["q", "wv"], ["v"]),
            Node("Transpose", "k_t", ["k"], ["kt"], Ints("perm", 0, 2, 1)),
            Node("MatMul", "scores", ["v", "kt"], ["y"]),
        ],
        [Tensor("wq", Random(16 * 8, 1), 16, 8), Tensor("q_bias", Random(8, 7), 8), Tensor("wk", Random(16 * 8, 2), 16, 8), Tensor("wv", Random(8 * 8, 6), 8, 8)],
        [Value("x", TokenShape)],
        [Value("y", 1, 5, 5)]);
}
