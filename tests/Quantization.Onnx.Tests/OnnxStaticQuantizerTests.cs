using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

public class OnnxStaticQuantizerTests
{
    private static readonly long[] ImageShape = [1, 3, 8, 8];

    [Fact]
    public async Task ResidualBlock_RunsInOrt_AndFusesIntoIntegerKernels()
    {
        ModelProto proto = ResidualBlock();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxStaticQuantizationResult result = await OnnxStaticQuantizer.QuantizeAsync(model, Images(16, seed: 1, scale: 1));

        // The residual Add sits between Convs (an integer path), so it is quantized; the pool after the last Conv is not.
        Assert.Equal(["conv2", "image", "relu1", "relu2"], result.Activations.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(["b1", "b2", "conv3_bias"], result.Biases);
        Assert.Equal(0, result.RaisedWeightScales);
        Assert.Equal(4, model.Proto.Graph.Node.Count(n => n.OpType == "QuantizeLinear"));
        Assert.Contains(model.Proto.Graph.Initializer, t => t.Name.StartsWith("b1", StringComparison.Ordinal) && t.DataType == (int)TensorProto.Types.DataType.Int32);

        byte[] quantized = model.Proto.ToByteArray();
        AssertKeepsTheOutputs(proto, quantized);

        // ORT's CPU provider turns the QDQ patterns into integer kernels at its default level.
        string[] ops = OnnxDynamicQuantizerTests.OptimizedOpTypes(quantized);
        Assert.Equal(2, ops.Count(op => op == "QLinearConv"));
        Assert.Contains("QLinearAdd", ops);
    }

    [Fact]
    public async Task UInt8Weights_WithZeroPoints_RunInOrt_AsIntegerKernels()
    {
        // The weights x86 CPUs without VNNI need (OrtInt8Kernels): asymmetric uint8 per channel, run by u8 x u8 kernels.
        ModelProto proto = ResidualBlock();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        await OnnxStaticQuantizer.QuantizeAsync(model, Images(16, seed: 1, scale: 1), new OnnxStaticQuantizationOptions { Scheme = new QuantizationScheme(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerChannel(0)) });

        TensorProto[] codes = [.. model.Proto.Graph.Initializer.Where(t => t.Dims.Count == 4)];
        Assert.Equal(3, codes.Length);
        Assert.All(codes, t => Assert.Equal((int)TensorProto.Types.DataType.Uint8, t.DataType));
        Assert.Contains(model.Proto.Graph.Initializer, t => t.Dims.Count == 1 && t.Dims[0] == 8 && t.DataType == (int)TensorProto.Types.DataType.Uint8 && t.RawData.Any(b => b != 0));

        byte[] quantized = model.Proto.ToByteArray();
        AssertKeepsTheOutputs(proto, quantized);

        Assert.Equal(2, OnnxDynamicQuantizerTests.OptimizedOpTypes(quantized).Count(op => op == "QLinearConv"));
    }

    [Fact]
    public async Task TinyInputScale_RaisesWeightScales_SoTheBiasFitsInInt32()
    {
        // Inputs around 1e-7 give s_x near 4e-10; with s_w near 4e-3 a bias of 5 would need 3e12 steps, far past int32.
        const float inputScale = 1e-7f;
        ModelProto proto = ResidualBlock();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxStaticQuantizationResult result = await OnnxStaticQuantizer.QuantizeAsync(model, Images(8, seed: 3, scale: inputScale));

        ScaleAndZeroPoint image = result.Activations["image"];
        float naiveWeightScale = QuantizedTensor.Quantize(Conv1Weight(), [8, 3, 3, 3], QuantizationScheme.Int8PerChannel()).Parameters.Scales.ToArray().Min();
        Assert.True(5 / ((double)image.Scale * naiveWeightScale) > int.MaxValue, "the test must be one where a plain bias quantization overflows");
        Assert.True(result.RaisedWeightScales > 0);
        foreach (TensorProto bias in model.Proto.Graph.Initializer.Where(t => t.DataType == (int)TensorProto.Types.DataType.Int32 && t.Name.EndsWith("_quantized", StringComparison.Ordinal)))
        {
            int[] values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(bias.RawData.Span).ToArray();
            Assert.All(values, v => Assert.InRange(v, -(1 << 30), 1 << 30));
        }

        float[] input = Random(3 * 8 * 8, 200, 2 * inputScale);
        float[] expected = RunSingle(proto.ToByteArray(), "image", input, ImageShape);
        Assert.True(Cosine(expected, RunSingle(model.Proto.ToByteArray(), "image", input, ImageShape)) > 0.999);
        Assert.True(Cosine(expected, RunSingle(model.Proto.ToByteArray(), "image", input, ImageShape, GraphOptimizationLevel.ORT_ENABLE_ALL)) > 0.999);
    }

    [Fact]
    public async Task Cancellation_LeavesTheModelUnchanged()
    {
        ModelProto proto = ResidualBlock();
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        using CancellationTokenSource cancel = new();
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => OnnxStaticQuantizer.QuantizeAsync(model, Images(4, 1, 1), cancellationToken: cancel.Token));
        Assert.Equal(proto, model.Proto);
    }

    [Fact]
    public void ACorruptSecondWeight_FailsByName_AfterTheFirstWasQuantized_AndLeavesTheModelAsItWas()
    {
        ModelProto proto = ResidualBlock();
        TensorProto w2 = proto.Graph.Initializer.Single(t => t.Name == "w2");
        w2.RawData = ByteString.CopyFrom(w2.RawData.Span[..64]);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        IReadOnlyList<string> activations = OnnxStaticQuantizer.ActivationCandidates(model);
        Dictionary<string, QuantizationParameters> parameters = activations.ToDictionary(a => a, _ => new QuantizationParameters(0.01f, 128));
        Assert.Contains("'w2'", Assert.Throws<InvalidDataException>(() => OnnxStaticQuantizer.Quantize(model, parameters)).Message, StringComparison.Ordinal);
        Assert.Equal(proto, model.Proto);
    }

    [Fact]
    public void BadParameters_AndSchemes_AreRejected()
    {
        OnnxModel model = OnnxModel.Parse(ResidualBlock().ToByteArray());
        Dictionary<string, QuantizationParameters> perChannel = new() { ["image"] = new QuantizationParameters([0.1f, 0.2f], [0, 0]) };
        Assert.Contains("'image'", Assert.Throws<ArgumentException>(() => OnnxStaticQuantizer.Quantize(model, perChannel)).Message, StringComparison.Ordinal);
        Dictionary<string, QuantizationParameters> zero = new() { ["image"] = new QuantizationParameters(0f, 0) };
        Assert.Throws<ArgumentException>(() => OnnxStaticQuantizer.Quantize(model, zero));
        Dictionary<string, QuantizationParameters> outOfRange = new() { ["image"] = new QuantizationParameters(0.1f, 256) };
        Assert.Contains("[0, 255]", Assert.Throws<ArgumentException>(() => OnnxStaticQuantizer.Quantize(model, outOfRange)).Message, StringComparison.Ordinal);
        Dictionary<string, QuantizationParameters> unsignedForInt8 = new() { ["image"] = new QuantizationParameters(0.1f, 128) };
        OnnxStaticQuantizationOptions int8 = new() { ActivationScheme = QuantizationScheme.Int8PerTensor() };
        Assert.Contains("[-128, 127]", Assert.Throws<ArgumentException>(() => OnnxStaticQuantizer.Quantize(model, unsignedForInt8, int8)).Message, StringComparison.Ordinal);
        OnnxStaticQuantizationOptions options = new() { ActivationScheme = QuantizationScheme.Int8PerChannel() };
        Assert.Throws<NotSupportedException>(() => OnnxStaticQuantizer.Quantize(model, new Dictionary<string, QuantizationParameters>(), options));
    }

    /// <summary>The quantized residual block against the float one on three held-out images, at ORT's basic and default levels.</summary>
    private static void AssertKeepsTheOutputs(ModelProto proto, byte[] quantized)
    {
        foreach (int seed in new[] { 100, 101, 102 })
        {
            float[] image = Random(3 * 8 * 8, seed, 2);
            float[] expected = RunSingle(proto.ToByteArray(), "image", image, ImageShape);
            Assert.True(Cosine(expected, RunSingle(quantized, "image", image, ImageShape)) > 0.999, "basic level");
            Assert.True(Cosine(expected, RunSingle(quantized, "image", image, ImageShape, GraphOptimizationLevel.ORT_ENABLE_ALL)) > 0.999, "default level");
        }
    }

    private static ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Images(int count, int seed, float scale) =>
        CalibrationDataSource.FromGenerator(count, i => Feed("image", Random(3 * 8 * 8, seed * 1000 + i, 2 * scale), 1, 3, 8, 8));

    private static float[] Conv1Weight() => Random(8 * 3 * 3 * 3, 11);

    /// <summary>image -> Conv(w1, b1) -> Relu = relu1 -> Conv(w2, b2) = conv2; Add(conv2, relu1) -> Relu = relu2 -> Conv(w3) = conv3 -> GlobalAveragePool = out.</summary>
    private static ModelProto ResidualBlock()
    {
        AttributeProto pads = Ints("pads", 1, 1, 1, 1);
        return Model(
            "residual",
            [
                Node("Conv", "conv_1", ["image", "w1", "b1"], ["conv1"], pads),
                Node("Relu", "relu_1", ["conv1"], ["relu1"]),
                Node("Conv", "conv_2", ["relu1", "w2", "b2"], ["conv2"], pads),
                Node("Add", "add", ["conv2", "relu1"], ["sum"]),
                Node("Relu", "relu_2", ["sum"], ["relu2"]),
                Node("Conv", "conv_3", ["relu2", "w3"], ["conv3"], pads),
                Node("GlobalAveragePool", "pool", ["conv3"], ["out"]),
            ],
            [
                Tensor("w1", Conv1Weight(), 8, 3, 3, 3),
                Tensor("b1", Random(8, 12, 10), 8),
                Tensor("w2", Random(8 * 8 * 3 * 3, 13, 0.5f), 8, 8, 3, 3),
                Tensor("b2", Random(8, 14, 0.2f), 8),
                Tensor("w3", Random(8 * 8 * 3 * 3, 15, 0.5f), 8, 8, 3, 3),
            ],
            [Value("image", ImageShape)],
            [Value("out", 1, 8, 1, 1)]);
    }
}
