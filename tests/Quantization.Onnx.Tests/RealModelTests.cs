using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

using Quantization.Samples;

using Xunit.Abstractions;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>The issue's bars on real models: ResNet-18 on the shipped photos and all-MiniLM-L6-v2 on the shipped sentences.</summary>
public class RealModelTests(ITestOutputHelper output)
{
    [Fact]
    public async Task MiniLM_WeightOnly_KeepsTheSentenceEmbeddings()
    {
        // Bias correction is measured on the first 100 sentences; the embeddings are compared on the other 200.
        byte[] original = MiniLM.LoadModel();
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        IReadOnlyList<string> sentences = MiniLM.Sentences;
        string[] calibration = [.. sentences.Take(100)], evaluation = [.. sentences.Skip(100)];
        Assert.True(evaluation.Length >= 200);
        float[][] reference = Embed(original, GraphOptimizationLevel.ORT_ENABLE_BASIC);

        OnnxModel nearest = OnnxModel.Parse(original);
        OnnxWeightQuantizer.Quantize(nearest);
        Report("rounding to nearest, basic level", Embed(nearest.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_BASIC));

        OnnxModel corrected = OnnxModel.Parse(original);
        IReadOnlyList<OnnxWeightReport> weights = await OnnxWeightQuantizer.QuantizeAsync(corrected, CalibrationDataSource.FromBatches(calibration.Select(s => MiniLM.Feed(tokenizer, s))));
        Assert.Equal(38, weights.Count); // 36 MatMul weights, the pooler's Gemm and the word embeddings
        double[] basic = Report("bias-corrected, basic level", Embed(corrected.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_BASIC));
        double[] fused = Report("bias-corrected, default level (MatMulNBits, int8 activations)", Embed(corrected.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_ALL));
        double[] all = Report("bias-corrected, default level, MatMulNBits kept in float", Embed(corrected.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_ALL, keepFloat: true));
        Assert.True(basic.Average() >= 0.9995, $"basic level: mean cosine {basic.Average()}");
        Assert.True(all.Average() >= 0.9995, $"default level in float: mean cosine {all.Average()}");
        OnnxModel gptq = OnnxModel.Parse(original);
        OnnxWeightQuantizationOptions gptqOptions = new() { Gptq = new GptqOptions() };
        await OnnxWeightQuantizer.QuantizeAsync(gptq, CalibrationDataSource.FromBatches(calibration.Select(s => MiniLM.Feed(tokenizer, s))), gptqOptions);
        double[] withGptq = Report("GPTQ and bias-corrected, basic level", Embed(gptq.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_BASIC));
        Assert.True(withGptq.Average() > basic.Average(), "GPTQ should recover more than rounding to nearest");
        Assert.True(fused.Average() < all.Average(), "ONNX Runtime's default MatMulNBits accuracy level quantizes activations; if it no longer does, the advice in SessionOptionsExtensions is stale");

        float[][] Embed(byte[] bytes, GraphOptimizationLevel level, bool keepFloat = false)
        {
            using SessionOptions options = new() { GraphOptimizationLevel = level, IntraOpNumThreads = 1 };
            if (keepFloat)
            {
                options.KeepWeightOnlyMatMulInFloat();
            }

            using InferenceSession session = new(bytes, options);
            return MiniLM.Embed(session, tokenizer, evaluation);
        }

        double[] Report(string label, float[][] embeddings)
        {
            double[] cosines = [.. embeddings.Select((e, i) => Cosine(reference[i], e))];
            output.WriteLine(FormattableString.Invariant($"MiniLM W8A16 {label}: {evaluation.Length} sentences, cosine mean {cosines.Average():F6}, worst {cosines.Min():F6}"));
            return cosines;
        }
    }

    [Fact]
    public async Task ResNet18_WeightOnlyAndStatic_KeepTheFeatures()
    {
        // Two folds: calibrate on three photos, compare features on the other three, then the other way round.
        float[][] inputs = ResNet18.LoadInputs();
        int[][] folds = [[0, 1, 2], [3, 4, 5]];
        float[][] reference = Features(File.ReadAllBytes(ResNet18.ModelPath), GraphOptimizationLevel.ORT_ENABLE_BASIC, [0, 1, 2, 3, 4, 5]);
        Report("fp32, BatchNormalization folded", Features(Prepare().Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_BASIC, [0, 1, 2, 3, 4, 5]));
        OnnxModel nearest = Prepare();
        OnnxWeightQuantizer.Quantize(nearest);
        Report("W8A16 rounding to nearest, basic level", Features(nearest.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_BASIC, [0, 1, 2, 3, 4, 5]));

        List<float[]> weightOnlyBasic = [], weightOnlyAll = [], staticAll = [], mixedAll = [];
        List<string> kept = [];
        long fp32Bytes = new FileInfo(ResNet18.ModelPath).Length;
        foreach ((int[] calibrate, int[] evaluate) in new[] { (folds[0], folds[1]), (folds[1], folds[0]) })
        {
            OnnxModel weightOnly = Prepare();
            await OnnxWeightQuantizer.QuantizeAsync(weightOnly, Photos(calibrate));
            weightOnlyBasic.AddRange(Features(weightOnly.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_BASIC, evaluate));
            weightOnlyAll.AddRange(Features(weightOnly.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_ALL, evaluate));

            OnnxModel fullInt8 = Prepare();
            await OnnxStaticQuantizer.QuantizeAsync(fullInt8, Photos(calibrate), new OnnxStaticQuantizationOptions { Scheme = OrtInt8Kernels.WeightScheme });
            staticAll.AddRange(Features(fullInt8.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_ALL, evaluate));

            // Automatic mixed precision: the fewest layers with float activations that reach 0.999 on the calibration photos.
            OnnxModel mixed = Prepare();
            OnnxStaticQuantizationResult mixedResult = await OnnxStaticQuantizer.QuantizeAsync(mixed, Photos(calibrate), new OnnxStaticQuantizationOptions { Scheme = OrtInt8Kernels.WeightScheme, MixedPrecision = new OnnxMixedPrecisionOptions() });
            kept.Add(string.Join(", ", mixedResult.MixedPrecision!.KeptInFloat));
            mixedAll.AddRange(Features(mixed.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_ALL, evaluate));
            Assert.True(fullInt8.Proto.CalculateSize() <= 0.27 * fp32Bytes, "static W8A8 file size");
            Assert.True(weightOnly.Proto.CalculateSize() <= 0.27 * fp32Bytes, "weight-only file size");
        }

        int[] order = [3, 4, 5, 0, 1, 2];
        float[][] held = [.. order.Select(i => reference[i])];
        double[] basic = Report("W8A16 bias-corrected, basic level", [.. weightOnlyBasic], held);
        double[] all = Report("W8A16 bias-corrected, default level", [.. weightOnlyAll], held);
        double[] full = Report("W8A8 static, default level", [.. staticAll], held);
        double[] auto = Report($"W8A8 static, --keep-float auto (kept: {string.Join("; ", kept.Select(k => k.Length == 0 ? "none" : k))}), default level", [.. mixedAll], held);
        Assert.True(basic.Average() >= 0.9995 && basic.Min() >= 0.999, "weight-only at the basic level");
        Assert.True(all.Average() >= 0.9995 && all.Min() >= 0.999, "weight-only at the default level");
        Assert.True(full.Average() >= 0.995, "static W8A8 at the default level");
        Assert.True(auto.Average() >= 0.998, $"static W8A8 with mixed precision at the default level: {auto.Average()}");

        static OnnxModel Prepare()
        {
            OnnxModel model = OnnxModel.Load(ResNet18.ModelPath);
            OnnxOpsetUpgrader.Upgrade(model);
            OnnxPreprocessor.FoldBatchNormalization(model);
            return model;
        }

        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Photos(int[] indices) => CalibrationDataSource.FromBatches(indices.Select(i => ResNet18.Feed(inputs[i])));

        float[][] Features(byte[] bytes, GraphOptimizationLevel level, int[] indices)
        {
            using SessionOptions options = new() { GraphOptimizationLevel = level, IntraOpNumThreads = 1 };
            using InferenceSession session = new(bytes, options);
            return ResNet18.Features(session, indices.Select(i => inputs[i]));
        }

        double[] Report(string label, float[][] features, float[][]? expected = null)
        {
            expected ??= reference;
            double[] cosines = [.. features.Select((f, i) => Cosine(expected[i], f))];
            output.WriteLine(FormattableString.Invariant($"ResNet-18 {label}: cosine mean {cosines.Average():F6}, worst {cosines.Min():F6}"));
            return cosines;
        }
    }

    [Fact]
    public async Task MiniLM_LinearLayers_OnTheInt8Kernels_MatchFloat()
    {
        // The 36 MatMul weights of all-MiniLM-L6-v2 with their real inputs on 20 sentences, through QuantizedLinear.
        byte[] bytes = MiniLM.LoadModel();
        OnnxModel model = OnnxModel.Parse(bytes);
        Dictionary<string, Protos.TensorProto> weights = model.Proto.Graph.Initializer.Where(t => t.Dims.Count == 2).ToDictionary(t => t.Name);
        Protos.NodeProto[] layers = [.. model.Proto.Graph.Node.Where(n => n.OpType == "MatMul" && weights.ContainsKey(n.Input[1]))];
        Assert.Equal(36, layers.Length);
        Dictionary<string, List<float>> inputs = layers.Select(n => n.Input[0]).Distinct().ToDictionary(n => n, _ => new List<float>());
        using (OnnxCalibrator capture = new(model, inputs.Keys, name => new RecordingObserver(inputs[name])))
        {
            BertTokenizer tokenizer = MiniLM.LoadTokenizer();
            await capture.RunAsync(CalibrationDataSource.FromBatches(MiniLM.Sentences.Take(20).Select(s => MiniLM.Feed(tokenizer, s))));
        }

        double worst8x8 = 1, worst8x16 = 1;
        foreach (Protos.NodeProto layer in layers)
        {
            Protos.TensorProto weight = weights[layer.Input[1]];
            int k = (int)weight.Dims[0], n = (int)weight.Dims[1];
            float[] w = model.ReadFloats(weight), transposed = new float[w.Length];
            for (int i = 0; i < k; i++)
            {
                for (int j = 0; j < n; j++)
                {
                    transposed[(j * k) + i] = w[(i * n) + j];
                }
            }

            float[] x = [.. inputs[layer.Input[0]]];
            int tokens = x.Length / k;
            float[] expected = new float[tokens * n];
            for (int t = 0; t < tokens; t++)
            {
                for (int j = 0; j < n; j++)
                {
                    double sum = 0;
                    for (int i = 0; i < k; i++)
                    {
                        sum += (double)x[(t * k) + i] * transposed[(j * k) + i];
                    }

                    expected[(t * n) + j] = (float)sum;
                }
            }

            QuantizedLinear linear = QuantizedLinear.Create(transposed, n, k);
            float[] actual = new float[tokens * n];
            linear.Forward(x, actual, tokens, QuantizedLinearMode.W8A16);
            worst8x16 = Math.Min(worst8x16, Cosine(expected, actual));
            linear.Forward(x, actual, tokens, QuantizedLinearMode.W8A8);
            worst8x8 = Math.Min(worst8x8, Cosine(expected, actual));
        }

        output.WriteLine(FormattableString.Invariant($"MiniLM linear layers on real activations, worst of 36: W8A16 cosine {worst8x16:F6}, W8A8 {worst8x8:F6}"));
        Assert.True(worst8x16 >= 0.9995, $"W8A16 {worst8x16}");
        Assert.True(worst8x8 >= 0.999, $"W8A8 {worst8x8}");
    }

    /// <summary>Keeps every value it is shown (a test's capture of real activations, not an observer to calibrate with).</summary>
    private sealed class RecordingObserver(List<float> values) : IQuantizationObserver
    {
        public QuantizationScheme Scheme { get; } = QuantizationScheme.Int8PerTensor();

        public long ObservedCount => values.Count;

        public void Observe(ReadOnlySpan<float> data, ReadOnlySpan<int> shape, string? tensorName = null) => values.AddRange(data);

        public QuantizationParameters ComputeParameters() => throw new NotSupportedException();
    }
}
