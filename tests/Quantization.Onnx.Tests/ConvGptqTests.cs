using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>GPTQ for Conv weights: the im2col Hessians of their inputs, and the quantized weights.</summary>
public class ConvGptqTests
{
    public static TheoryData<string, int, int, int[], int[], object> Geometries => new()
    {
        // name, channels, groups, kernel, spatial input size, attributes (an AttributeProto[]: the protobuf types are internal; ORT runs no dilation with SAME padding)
        { "strides 2, asymmetric pads, dilation", 5, 1, [3, 2], [9, 8], new AttributeProto[] { Ints("strides", 2, 2), Ints("pads", 1, 0, 2, 1), Ints("dilations", 2, 1) } },
        { "SAME_UPPER, strides 2", 4, 1, [3, 3], [7, 8], new AttributeProto[] { AutoPad("SAME_UPPER"), Ints("strides", 2, 2) } },
        { "SAME_LOWER, strides 2 and 3", 3, 1, [2, 3], [8, 10], new AttributeProto[] { AutoPad("SAME_LOWER"), Ints("strides", 2, 3) } },
        { "VALID, dilation 2", 3, 1, [3, 3], [9, 9], new AttributeProto[] { AutoPad("VALID"), Ints("dilations", 2, 2) } },
        { "two groups, strides 2, pads", 6, 2, [3, 3], [7, 7], new AttributeProto[] { Ints("strides", 2, 2), Ints("pads", 1, 1, 1, 1), Int("group", 2) } },
        { "depthwise", 4, 4, [3, 3], [6, 6], new AttributeProto[] { Ints("pads", 1, 1, 1, 1), Int("group", 4) } },
        { "1-D, strides 2, pads, dilation 2", 5, 1, [3], [11], new AttributeProto[] { Ints("strides", 2), Ints("pads", 2, 1), Ints("dilations", 2) } },
    };

    [Theory]
    [MemberData(nameof(Geometries))]
    public void Hessians_OfTheUnfoldedInput_EqualBruteForce_OnPatchesOrtExtracts(string name, int channels, int groups, int[] kernel, int[] spatial, object attributeArray)
    {
        _ = name;
        AttributeProto[] attributes = (AttributeProto[])attributeArray;
        int groupChannels = channels / groups, positions = kernel.Aggregate(1, (a, b) => a * b), outputs = 2 * groups;
        long[] inputShape = [2, channels, .. spatial.Select(s => (long)s)];
        float[] input = Random(2 * channels * spatial.Aggregate(1, (a, b) => a * b), 11, 4);
        foreach (int blockSize in new[] { 0, 2, 64 })
        {
            NodeProto node = Node("Conv", "conv", ["x", "w"], ["y"], attributes);
            ConvPatches patches = ConvPatches.Create(node, [outputs, groupChannels, .. kernel.Select(k => (long)k)], blockSize, out string? reason)!;
            Assert.Null(reason);
            int padded = blockSize is 0 or >= 64 || groupChannels <= blockSize ? groupChannels : (groupChannels + blockSize - 1) / blockSize * blockSize;
            Assert.Equal(padded, patches.PaddedChannels);
            HessianAccumulator[] hessians = [.. Enumerable.Range(0, groups).Select(_ => new HessianAccumulator(patches.Features))];
            patches.Accumulate(input, [.. inputShape.Select(d => (int)d)], hessians, "x");

            // ORT extracts the patches: a Conv whose output channel (group, kernel position, channel) has a single 1 there.
            int extracted = groupChannels * positions;
            float[] oneHot = new float[groups * extracted * groupChannels * positions];
            for (int g = 0; g < groups; g++)
            {
                for (int p = 0; p < positions; p++)
                {
                    for (int c = 0; c < groupChannels; c++)
                    {
                        int o = (g * extracted) + (p * groupChannels) + c;
                        oneHot[(((o * groupChannels) + c) * positions) + p] = 1;
                    }
                }
            }

            (float[] y, long[] yShape) = Run(Conv(oneHot, groups * extracted, groupChannels, kernel, attributes, inputShape), input, inputShape);
            int outPositions = (int)yShape.Skip(2).Aggregate(1L, (a, b) => a * b);
            for (int g = 0; g < groups; g++)
            {
                int features = patches.Features, rows = 0;
                double[] sum = new double[features * features];
                double[] x = new double[features];
                for (int image = 0; image < 2; image++)
                {
                    for (int q = 0; q < outPositions; q++, rows++)
                    {
                        Array.Clear(x);
                        for (int p = 0; p < positions; p++)
                        {
                            for (int c = 0; c < groupChannels; c++)
                            {
                                x[(p * padded) + c] = y[((((image * groups * extracted) + (g * extracted) + (p * groupChannels) + c) * outPositions)) + q];
                            }
                        }

                        for (int i = 0; i < features; i++)
                        {
                            for (int j = 0; j < features; j++)
                            {
                                sum[(i * features) + j] += x[i] * x[j];
                            }
                        }
                    }
                }

                Assert.Equal(rows, hessians[g].Rows);
                double[] actual = hessians[g].ToMatrix();
                double largest = sum.Max() * 2 / rows;
                for (int i = 0; i < sum.Length; i++)
                {
                    Assert.True(Math.Abs((sum[i] * 2 / rows) - actual[i]) <= 1e-12 * largest, $"{name}, blocks of {blockSize}, group {g}: H[{i / features}, {i % features}] = {actual[i]}, brute force {sum[i] * 2 / rows}");
                }
            }

            // The permuted weight's rows times the patches are the Conv: the rows and the patches agree on the feature order.
            float[] weight = Random(outputs * groupChannels * positions, 5);
            float[] weightRows = patches.ToRows(weight);
            Assert.Equal(weight, patches.FromRows(weightRows));
            (float[] conv, _) = Run(Conv(weight, outputs, groupChannels, kernel, attributes, inputShape), input, inputShape);
            int perGroup = outputs / groups;
            for (int image = 0; image < 2; image++)
            {
                for (int m = 0; m < outputs; m++)
                {
                    int g = m / perGroup;
                    for (int q = 0; q < outPositions; q++)
                    {
                        double dot = 0;
                        for (int p = 0; p < positions; p++)
                        {
                            for (int c = 0; c < groupChannels; c++)
                            {
                                dot += weightRows[(m * patches.Features) + (p * padded) + c] * y[((((image * groups * extracted) + (g * extracted) + (p * groupChannels) + c) * outPositions)) + q];
                            }
                        }

                        Assert.Equal(conv[(((image * outputs) + m) * outPositions) + q], dot, 1e-4);
                    }
                }
            }
        }
    }

    [Fact]
    public void Patches_OfUnsupportedConvs_AreRefusedWithAReason()
    {
        Assert.Null(ConvPatches.Create(Node("Conv", "c", ["x", "w"], ["y"]), [4, 2, 3, 3, 3], 0, out string? reason));
        Assert.Contains("3-D", reason, StringComparison.Ordinal);
        Assert.Null(ConvPatches.Create(Node("Conv", "c", ["x", "w"], ["y"], Int("group", 3)), [4, 2, 3, 3], 0, out reason));
        Assert.Contains("does not divide", reason, StringComparison.Ordinal);
        Assert.Null(ConvPatches.Create(Node("Conv", "c", ["x", "w"], ["y"], Ints("strides", 0, 1)), [4, 2, 3, 3], 0, out reason));
        ConvPatches patches = ConvPatches.Create(Node("Conv", "c", ["x", "w"], ["y"]), [4, 2, 3, 3], 0, out _)!;
        ArgumentException wrong = Assert.Throws<ArgumentException>(() => patches.Accumulate(new float[3 * 25], [1, 3, 5, 5], [new HessianAccumulator(18)], "x"));
        Assert.Contains("'x'", wrong.Message, StringComparison.Ordinal);
        Assert.Throws<NonFiniteValueException>(() => patches.Accumulate([.. Enumerable.Repeat(float.NaN, 2 * 25)], [1, 2, 5, 5], [new HessianAccumulator(18)], "x"));
    }

    public static TheoryData<string, int> Schemes => new()
    {
        { "int8 per channel", 0 },
        { "int4 per channel", 0 },
        { "int4 blocks of 16 (24 channels: padded)", 16 },
        { "int4 blocks of 32 (24 channels: one block a position)", 32 },
    };

    [Theory]
    [MemberData(nameof(Schemes))]
    public async Task Gptq_OnAConv_HasRtnsScales_AndALowerOutputError(string label, int blockSize)
    {
        const int channels = 24, outputs = 16, size = 15;
        AttributeProto[] attributes = [Ints("strides", 2, 2), Ints("pads", 2, 1, 2, 1), Ints("dilations", 2, 1)];
        float[] weight = Random(outputs * channels * 9, 3);
        byte[] model = Conv(weight, outputs, channels, [3, 3], attributes, [1, channels, size, size]);

        // Correlated channels (a low-rank mix plus noise), as real feature maps are: what GPTQ exploits.
        float[][] feeds = [.. Enumerable.Range(0, 8).Select(Correlated)];
        QuantizationScheme scheme = label.StartsWith("int8", StringComparison.Ordinal) ? QuantizationScheme.Int8PerChannel()
            : QuantizationScheme.Int4PerGroup(32).WithGranularity(blockSize == 0 ? QuantizationGranularity.PerChannel() : QuantizationGranularity.PerGroup(blockSize));
        (OnnxModel rtn, OnnxModel gptq) = (OnnxModel.Parse(model), OnnxModel.Parse(model));
        OnnxOpsetUpgrader.Upgrade(rtn, 21);
        OnnxOpsetUpgrader.Upgrade(gptq, 21);
        await OnnxWeightQuantizer.QuantizeAsync(rtn, Calibration(), new OnnxWeightQuantizationOptions { Scheme = scheme, BiasCorrection = false });
        await OnnxWeightQuantizer.QuantizeAsync(gptq, Calibration(), new OnnxWeightQuantizationOptions { Scheme = scheme, BiasCorrection = false, Gptq = new GptqOptions() });
        TensorProto Scales(OnnxModel m) => m.Proto.Graph.Initializer.Single(t => t.Name.StartsWith("w_scale", StringComparison.Ordinal));
        Assert.Equal(Scales(rtn), Scales(gptq));
        Assert.NotEqual(rtn.Proto.Graph.Initializer.Single(t => t.Name.StartsWith("w_quantized", StringComparison.Ordinal)), gptq.Proto.Graph.Initializer.Single(t => t.Name.StartsWith("w_quantized", StringComparison.Ordinal)));

        double rtnError = 0, gptqError = 0;
        foreach (float[] x in feeds)
        {
            float[] expected = RunSingle(model, "x", x, [1, channels, size, size]);
            rtnError += SquaredError(expected, RunSingle(rtn.Proto.ToByteArray(), "x", x, [1, channels, size, size], GraphOptimizationLevel.ORT_DISABLE_ALL));
            gptqError += SquaredError(expected, RunSingle(gptq.Proto.ToByteArray(), "x", x, [1, channels, size, size], GraphOptimizationLevel.ORT_DISABLE_ALL));
        }

        Assert.True(gptqError < 0.8 * rtnError, $"{label}: GPTQ output error {gptqError}, rounding to nearest {rtnError}");

        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Calibration() => CalibrationDataSource.FromBatches(feeds.Select(x => Feed("x", x, 1, channels, size, size)));

        static float[] Correlated(int seed)
        {
            float[] basis = Random(4 * size * size, 100 + seed, 2), mix = Random(channels * 4, 7, 2), noise = Random(channels * size * size, 200 + seed, 0.2f);
            float[] x = new float[channels * size * size];
            for (int c = 0; c < channels; c++)
            {
                for (int i = 0; i < size * size; i++)
                {
                    float v = noise[(c * size * size) + i];
                    for (int b = 0; b < 4; b++)
                    {
                        v += mix[(c * 4) + b] * basis[(b * size * size) + i];
                    }

                    x[(c * size * size) + i] = v;
                }
            }

            return x;
        }

        static double SquaredError(float[] a, float[] b) => a.Zip(b).Sum(p => (double)(p.First - p.Second) * (p.First - p.Second));
    }

    private static AttributeProto AutoPad(string value) => new() { Name = "auto_pad", Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    private static byte[] Conv(float[] weight, int outputs, int groupChannels, int[] kernel, AttributeProto[] attributes, long[] inputShape) =>
        Model("conv", [Node("Conv", "conv", ["x", "w"], ["y"], attributes)], [Tensor("w", weight, [outputs, groupChannels, .. kernel.Select(k => (long)k)])], [Value("x", inputShape)], [new ValueInfoProto { Name = "y" }]).ToByteArray();

    private static (float[] Values, long[] Shape) Run(byte[] model, float[] input, long[] shape)
    {
        using SessionOptions options = new() { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        using InferenceSession session = new(model, options);
        using OrtValue value = OrtValue.CreateTensorValueFromMemory(input, shape);
        using RunOptions runOptions = new();
        using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(runOptions, ["x"], [value], [session.OutputNames[0]]);
        return (outputs[0].GetTensorDataAsSpan<float>().ToArray(), outputs[0].GetTensorTypeAndShape().Shape);
    }
}
