using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

public class OnnxWeightQuantizerTests
{
    [Fact]
    public void WeightOnly_MatMulGemmConv_RunInOrtWithTheDequantizedWeights()
    {
        // Weights whose output channels differ in magnitude by 100x: a DequantizeLinear on the wrong axis would show.
        float[] w1 = Weight(8 * 4, i => 1 + (99 * (i % 4) / 3)); // MatMul B [8, 4]: channels along axis 1
        float[] w2 = Weight(5 * 8, i => 1 + (99 * (i / 8) / 4)); // Gemm B [5, 8] with transB: channels along axis 0
        float[] w3 = Weight(4 * 3 * 3 * 3, i => 1 + (99 * (i / 27) / 3)); // Conv W [4, 3, 3, 3]: channels along axis 0
        ModelProto proto = Model(w1, w2, w3);
        float[] x = Weight(2 * 8, _ => 1);
        float[] image = Weight(3 * 6 * 6, _ => 1);
        float[][] reference = Run(proto.ToByteArray(), x, image, GraphOptimizationLevel.ORT_ENABLE_BASIC);

        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        IReadOnlyList<OnnxWeightReport> reports = OnnxWeightQuantizer.Quantize(model);
        Assert.Equal([("w1", 1), ("w2", 0), ("w3", 0)], reports.Select(r => (r.Weight, r.Axis)));
        Assert.Equal(3, model.Proto.Graph.Node.Count(n => n.OpType == "DequantizeLinear"));
        Assert.DoesNotContain(model.Proto.Graph.Initializer, t => t.DataType == (int)TensorProto.Types.DataType.Float && t.Dims.Count > 1);
        // At ORT's basic optimisation level DequantizeLinear runs as written, so the quantized model computes what the
        // float model computes with our dequantized weights. The default level may fuse DequantizeLinear into the
        // consumer (different arithmetic), so there only the accuracy is checked.
        float[][] quantized = Run(model.Proto.ToByteArray(), x, image, GraphOptimizationLevel.ORT_ENABLE_BASIC);
        float[][] fused = Run(model.Proto.ToByteArray(), x, image, GraphOptimizationLevel.ORT_ENABLE_ALL);
        float[][] dequantized = Run(Model(Restored(w1, [8, 4], 1), Restored(w2, [5, 8], 0), Restored(w3, [4, 3, 3, 3], 0)).ToByteArray(), x, image, GraphOptimizationLevel.ORT_ENABLE_BASIC);
        for (int o = 0; o < 3; o++)
        {
            for (int i = 0; i < quantized[o].Length; i++)
            {
                Assert.Equal(dequantized[o][i], quantized[o][i], Math.Abs(dequantized[o][i]) * 1e-5f);
            }

            Assert.True(Cosine(reference[o], quantized[o]) > 0.9999, $"output {o}: cosine {Cosine(reference[o], quantized[o])}");
            Assert.True(Cosine(reference[o], fused[o]) > 0.9999, $"output {o}, default optimisation: cosine {Cosine(reference[o], fused[o])}");
        }

        Assert.True(model.Proto.CalculateSize() < proto.CalculateSize());
        Assert.Equal(
            proto.Graph.Initializer.Where(t => t.Dims.Count > 1).Sum(t => t.RawData.Length) / 4,
            model.Proto.Graph.Initializer.Where(t => t.DataType == (int)TensorProto.Types.DataType.Int8 && t.Dims.Count > 1).Sum(t => t.RawData.Length));
    }

    [Fact]
    public void WeightOnly_ConstantNodeWeights_AreQuantizedToo()
    {
        float[] w1 = Weight(8 * 4, i => 1 + (99 * (i % 4) / 3));
        ModelProto proto = Model(w1, Weight(40, _ => 1), Weight(108, _ => 1));
        TensorProto constantValue = proto.Graph.Initializer.First(t => t.Name == "w1");
        proto.Graph.Initializer.Remove(constantValue);
        proto.Graph.Node.Insert(0, new NodeProto { Name = "w1_constant", OpType = "Constant", Output = { "w1" }, Attribute = { new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = constantValue } } });
        float[] x = Weight(2 * 8, _ => 1);
        float[] image = Weight(3 * 6 * 6, _ => 1);

        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        Assert.Contains("w1", OnnxWeightQuantizer.Quantize(model).Select(r => r.Weight));
        Assert.DoesNotContain(model.Proto.Graph.Node, n => n.OpType == "Constant");
        float[][] quantized = Run(model.Proto.ToByteArray(), x, image, GraphOptimizationLevel.ORT_ENABLE_BASIC);
        float[][] dequantized = Run(Model(Restored(w1, [8, 4], 1), Restored(Weight(40, _ => 1), [5, 8], 0), Restored(Weight(108, _ => 1), [4, 3, 3, 3], 0)).ToByteArray(), x, image, GraphOptimizationLevel.ORT_ENABLE_BASIC);
        for (int i = 0; i < quantized[0].Length; i++)
        {
            Assert.Equal(dequantized[0][i], quantized[0][i], Math.Abs(dequantized[0][i]) * 1e-5f);
        }
    }

    [Fact]
    public void ExcludedNodesAndOldOpsets_AreLeftAlone()
    {
        OnnxModel model = OnnxModel.Parse(Model(Weight(32, _ => 1), Weight(40, _ => 1), Weight(108, _ => 1)).ToByteArray());
        OnnxWeightQuantizationOptions options = new();
        options.ExcludeNodes.Add(new NamePattern("gemm"));
        options.OpTypes.Remove("Conv");
        Assert.Equal(["w1"], OnnxWeightQuantizer.Quantize(model, options).Select(r => r.Weight));

        ModelProto old = Model(Weight(32, _ => 1), Weight(40, _ => 1), Weight(108, _ => 1));
        old.OpsetImport[0].Version = 11;
        Assert.Throws<NotSupportedException>(() => OnnxWeightQuantizer.Quantize(OnnxModel.Parse(old.ToByteArray())));
    }

    [Fact]
    public void AWeightWithTooFewBytes_FailsByName_AndLeavesTheModelAsItWas()
    {
        ModelProto proto = Model(Weight(32, _ => 1), Weight(40, _ => 1), Weight(108, _ => 1));
        TensorProto w3 = proto.Graph.Initializer.Single(t => t.Name == "w3");
        w3.RawData = ByteString.CopyFrom(w3.RawData.Span[..100]);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        Assert.Contains("'w3'", Assert.Throws<InvalidDataException>(() => OnnxWeightQuantizer.Quantize(model)).Message, StringComparison.Ordinal);
        Assert.Equal(proto, model.Proto); // w1 and w2 were quantized on a copy that was dropped
    }

    [Fact]
    public void IncludePatternsAndPerNodeSchemes_DecideEachWeight()
    {
        OnnxModel model = OnnxModel.Parse(Model(Weight(32, _ => 1), Weight(40, _ => 1), Weight(108, _ => 1)).ToByteArray());
        OnnxWeightQuantizationOptions options = new();
        options.IncludeNodes.Add(new NamePattern("re:^(matmul|conv)$"));
        options.NodeSchemes["conv"] = QuantizationScheme.Int8PerTensor();
        options.NodeSchemes["matmul"] = new QuantizationScheme(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerChannel(0));
        IReadOnlyList<OnnxWeightReport> reports = OnnxWeightQuantizer.Quantize(model, options);

        // The per-channel override lands on MatMul's channel axis (1) whatever axis it names; per tensor has no axis.
        Assert.Equal([("w1", (int?)1), ("w3", null)], reports.Select(r => (r.Weight, r.Axis)));
        Assert.Equal((int)TensorProto.Types.DataType.Uint8, model.Proto.Graph.Initializer.Single(t => t.Name == "w1_quantized").DataType);
        Assert.Empty(model.Proto.Graph.Initializer.Single(t => t.Name == "w3_scale").Dims);
        Assert.DoesNotContain(model.Proto.Graph.Node.Single(n => n.Output[0] == "w3").Attribute, a => a.Name == "axis");
        Assert.Contains(model.Proto.Graph.Initializer, t => t.Name == "w2" && t.DataType == (int)TensorProto.Types.DataType.Float);

        float[] x = Weight(2 * 8, _ => 1), image = Weight(3 * 6 * 6, _ => 1);
        float[][] expected = Run(Model(Weight(32, _ => 1), Weight(40, _ => 1), Weight(108, _ => 1)).ToByteArray(), x, image, GraphOptimizationLevel.ORT_ENABLE_BASIC);
        float[][] actual = Run(model.Proto.ToByteArray(), x, image, GraphOptimizationLevel.ORT_ENABLE_BASIC);
        Assert.All(Enumerable.Range(0, 3), o => Assert.True(Cosine(expected[o], actual[o]) > 0.999));

        options.NodeSchemes["conv"] = QuantizationScheme.GgmlQ8_0();
        Assert.Throws<NotSupportedException>(() => OnnxWeightQuantizer.Quantize(OnnxModel.Parse(Model(Weight(32, _ => 1), Weight(40, _ => 1), Weight(108, _ => 1)).ToByteArray()), options));
    }

    [Fact]
    public async Task BiasCorrection_CancelsTheMeanShiftOfEveryLayer()
    {
        // Inputs with a large mean make the shift ΔW·E[x] dominate the rounding error of each output channel.
        float[] w1 = Weight(8 * 4, _ => 1), w2 = Weight(5 * 8, _ => 1), w3 = Weight(4 * 27, _ => 1);
        byte[] original = Model(w1, w2, w3).ToByteArray();
        float[][] xs = [.. Enumerable.Range(0, 8).Select(i => Weight(16, _ => 1).Select(v => 5 + v + i).ToArray())];
        float[][] images = [.. Enumerable.Range(0, 8).Select(i => Weight(108, _ => 1).Select(v => 3 + v - i).ToArray())];
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> data = CalibrationDataSource.FromGenerator(8, i => (IReadOnlyCollection<NamedOnnxValue>)
        [
            NamedOnnxValue.CreateFromTensor("x", new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>(xs[i], [2, 8])),
            NamedOnnxValue.CreateFromTensor("image", new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>(images[i], [1, 3, 6, 6])),
        ]);

        OnnxModel nearest = OnnxModel.Parse(original), corrected = OnnxModel.Parse(original);
        OnnxWeightQuantizer.Quantize(nearest);
        Assert.Equal(3, (await OnnxWeightQuantizer.QuantizeAsync(corrected, data)).Count);
        Assert.Single(corrected.Proto.Graph.Node, n => n.OpType == "Add"); // MatMul had no bias: one was added
        Assert.Equal(3, corrected.Proto.Graph.Node.Single(n => n.OpType == "Conv").Input.Count); // so had Conv
        Assert.DoesNotContain(corrected.Proto.Graph.Initializer, t => t.Name == "bias"); // Gemm's bias was replaced, not kept beside

        for (int output = 0; output < 3; output++)
        {
            double shiftNearest = MeanError(nearest, output), shiftCorrected = MeanError(corrected, output);
            Assert.True(Math.Abs(shiftCorrected) < Math.Abs(shiftNearest) / 10, $"output {output}: mean error {shiftCorrected} corrected vs {shiftNearest}");
        }

        double MeanError(OnnxModel model, int output)
        {
            double sum = 0;
            int count = 0;
            for (int i = 0; i < 8; i++)
            {
                float[] expected = Run(original, xs[i], images[i], GraphOptimizationLevel.ORT_ENABLE_BASIC)[output];
                float[] actual = Run(model.Proto.ToByteArray(), xs[i], images[i], GraphOptimizationLevel.ORT_ENABLE_BASIC)[output];
                sum += actual.Zip(expected, (a, e) => (double)a - e).Sum();
                count += expected.Length;
            }

            return sum / count;
        }
    }

    private static float[] Restored(float[] weight, int[] shape, int axis) =>
        QuantizedTensor.Quantize(weight, shape, QuantizationScheme.Int8PerChannel(axis)).Dequantize();

    private static float[] Weight(int count, Func<int, float> magnitude)
    {
        Random random = new(count);
        return Enumerable.Range(0, count).Select(i => (float)(random.NextDouble() - 0.5) * magnitude(i)).ToArray();
    }

    private static float[][] Run(byte[] model, float[] x, float[] image, GraphOptimizationLevel level)
    {
        using SessionOptions options = new() { GraphOptimizationLevel = level };
        using InferenceSession session = new(model, options);
        using OrtValue xValue = OrtValue.CreateTensorValueFromMemory(x, [2, 8]);
        using OrtValue imageValue = OrtValue.CreateTensorValueFromMemory(image, [1, 3, 6, 6]);
        using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(new RunOptions(), ["x", "image"], [xValue, imageValue], ["a", "b", "c"]);
        return [.. outputs.Select(o => o.GetTensorDataAsSpan<float>().ToArray())];
    }

    /// <summary>x [2, 8] -> MatMul(w1 [8, 4]) = a; Gemm(x, w2 [5, 8], bias, transB = 1) = b; image [1, 3, 6, 6] -> Conv(w3 [4, 3, 3, 3]) = c.</summary>
    private static ModelProto Model(float[] w1, float[] w2, float[] w3) => new()
    {
        IrVersion = 8,
        OpsetImport = { new OperatorSetIdProto { Version = 13 } },
        Graph = new GraphProto
        {
            Name = "three-layers",
            Node =
            {
                new NodeProto { Name = "matmul", OpType = "MatMul", Input = { "x", "w1" }, Output = { "a" } },
                new NodeProto { Name = "gemm", OpType = "Gemm", Input = { "x", "w2", "bias" }, Output = { "b" }, Attribute = { new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 } } },
                new NodeProto { Name = "conv", OpType = "Conv", Input = { "image", "w3" }, Output = { "c" } },
            },
            Initializer = { Tensor("w1", w1, 8, 4), Tensor("w2", w2, 5, 8), Tensor("bias", [0.1f, 0.2f, 0.3f, 0.4f, 0.5f], 5), Tensor("w3", w3, 4, 3, 3, 3) },
            Input = { Value("x", 2, 8), Value("image", 1, 3, 6, 6) },
            Output = { Value("a", 2, 4), Value("b", 2, 5), Value("c", 1, 4, 4, 4) },
        },
    };
}
