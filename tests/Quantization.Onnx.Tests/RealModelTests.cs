using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

using Quantization.Samples;

using Xunit.Abstractions;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>The bars on real models: ResNet-18 on the shipped photos and all-MiniLM-L6-v2 on the shipped sentences.</summary>
public class RealModelTests(ITestOutputHelper output)
{
    [Fact]
    public void MiniLM_WeightOnly_KeepsTheSentenceEmbeddings()
    {
        byte[] original = MiniLM.LoadModel();
        OnnxModel model = OnnxModel.Parse(original);
        IReadOnlyList<OnnxWeightReport> weights = OnnxWeightQuantizer.Quantize(model);
        byte[] quantized = Google.Protobuf.MessageExtensions.ToByteArray(model.Proto);
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        IReadOnlyList<string> sentences = MiniLM.Sentences;
        Assert.True(sentences.Count >= 200);

        float[][] reference = Embed(original, GraphOptimizationLevel.ORT_ENABLE_BASIC);
        foreach (GraphOptimizationLevel level in new[] { GraphOptimizationLevel.ORT_ENABLE_BASIC, GraphOptimizationLevel.ORT_ENABLE_ALL })
        {
            double[] cosines = [.. Embed(quantized, level).Select((e, i) => Cosine(reference[i], e))];
            output.WriteLine(FormattableString.Invariant($"MiniLM W8A16, {level}: {weights.Count} weights, {sentences.Count} sentences, cosine mean {cosines.Average():F6}, worst {cosines.Min():F6}"));
            Assert.True(cosines.Average() >= 0.9995, $"{level}: mean cosine {cosines.Average()}");
        }

        float[][] Embed(byte[] bytes, GraphOptimizationLevel level)
        {
            using SessionOptions options = new() { GraphOptimizationLevel = level, IntraOpNumThreads = 1 };
            using InferenceSession session = new(bytes, options);
            return MiniLM.Embed(session, tokenizer, sentences);
        }
    }
}
